//! The import table's staging snapshot.

use sqlx::Row;

use crate::{like_pattern, Backend, Result, Store};

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

/// Which staged rows a page (or "select all matching") is about.
#[derive(Debug, Clone, Default)]
pub struct StagedFilter<'a> {
    /// `new`, `imported`, `changed`, `disabled`, `invalid`; `None`: all.
    pub status: Option<&'a str>,
    pub search: Option<&'a str>,
}

const STAGED_COLS: &str = "id, external_id, dn, username, username_key, name, email, groups, dir_state, problem, status, user_id";

/// PostgreSQL: the vacuum and statistics of the four tables a bulk change
/// writes ([`Store::refresh_statistics`], and the end of a bulk load).
pub(crate) const VACUUM_ANALYZE_BULK: [&str; 4] =
    ["VACUUM (ANALYZE) staged_users", "VACUUM (ANALYZE) users", "VACUUM (ANALYZE) staged_dirty", "VACUUM (ANALYZE) sync_items"];

/// PostgreSQL: run `statements` (maintenance of a table each) at once,
/// each on a connection of its own; every one ends before the first
/// error, if any, is returned (as `bulk.rs` builds its indexes).
pub(crate) async fn side_by_side(pool: &sqlx::AnyPool, statements: &[&str]) -> Result<()> {
    let mut running = tokio::task::JoinSet::new();
    for sql in statements {
        let (pool, sql) = (pool.clone(), sql.to_string());
        running.spawn(async move { sqlx::query(&sql).execute(&pool).await.map(|_| ()) });
    }
    let mut first_error = None;
    while let Some(done) = running.join_next().await {
        let r = done.map_err(|e| crate::Error::Database(sqlx::Error::Protocol(format!("table maintenance stopped: {e}"))));
        if let Err(e) = r.and_then(|r| r.map_err(Into::into)) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// How a page finds the rows a search matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchPath {
    /// The trigram index (SQLite: the FTS5 table `staged_search`;
    /// PostgreSQL: the pg_trgm GIN index on `search`, which serves
    /// `LIKE '%…%'`).
    Trigrams,
    /// SQLite: the `search` column itself, row by row: searches under three
    /// characters, which trigrams cannot serve, those that match more than
    /// [`TRIGRAM_CAP`] rows, and every search while a first sync's bulk
    /// load has yet to fill the trigram index (`bulk.rs`). The trigram
    /// index lists a large match set slower (about 40 ms for 100,000 rows)
    /// than a page's walk of its sort index, which holds the search text,
    /// tests the rows it passes (about 20 ms).
    Scan,
}

/// SQLite: a search the trigram index finds more rows for than this is
/// paged by [`SearchPath::Scan`]. The trigram index lists its matches
/// lazily, so finding out costs at most this many (about 12 ms).
const TRIGRAM_CAP: i64 = 20_000;

impl StagedFilter<'_> {
    /// The search as compared: trimmed and lower-cased (`None`: no search).
    fn search_text(&self) -> Option<String> {
        self.search.map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase)
    }

    /// ` AND …` clauses after `directory = $1`, and their bound values from `$2`.
    ///
    /// A search of three characters or more goes through the trigram index
    /// unless `path` is [`SearchPath::Scan`]; shorter ones scan the column
    /// (on SQLite through a sort order's index, which holds the search
    /// text: migration 0022).
    fn clause(&self, backend: Backend, path: SearchPath) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        if let Some(s) = self.status {
            binds.push(s.to_string());
            sql.push_str(&format!(" AND status = ${}", binds.len() + 1));
        }
        if let Some(q) = self.search_text() {
            let n = binds.len() + 2;
            match backend {
                Backend::Sqlite if trigrams_serve(&q) && path == SearchPath::Trigrams => {
                    binds.push(fts_phrase(&q));
                    sql.push_str(&format!(" AND id IN (SELECT rowid FROM staged_search WHERE staged_search MATCH ${n})"));
                }
                Backend::Sqlite => {
                    binds.push(like_pattern(&q));
                    sql.push_str(&format!(" AND search LIKE ${n} ESCAPE '\\'"));
                }
                // Backslash is PostgreSQL's default escape: a plain LIKE keeps
                // the index usable. PostgreSQL pages every search this way:
                // walking a sort order's index to a deep page instead reads
                // each row it passes from the table (a 2-character search
                // matching every row took 280–480 ms at page 3,331).
                Backend::Postgres => {
                    binds.push(like_pattern(&q));
                    sql.push_str(&format!(" AND search LIKE ${n}"));
                }
            }
        }
        (sql, binds)
    }
}

/// Whether the trigram index can serve a search (as compared): one of at
/// least three characters.
fn trigrams_serve(q: &str) -> bool {
    q.chars().count() >= 3
}

/// An FTS5 query for `q` as one quoted phrase: every character literal, `"` doubled.
fn fts_phrase(q: &str) -> String {
    format!("\"{}\"", q.replace('"', "\"\""))
}

/// A count of the import table's rows for one filter, and how its pages
/// find them.
#[derive(Debug, Clone, Copy)]
struct Counted {
    /// The snapshot version it was counted at.
    version: i64,
    total: i64,
    path: SearchPath,
}

/// The import table's counts by `(directory, status, search)`. Every page
/// of a search shows its "Total N", and counting a search that matches
/// most of 100,000 rows costs as much as the page itself: a count is kept
/// while the snapshot's version (`staging_snapshots.version`, changed in
/// the transaction of every write to its rows, search text or statuses)
/// stays the same, on every replica.
#[derive(Clone, Default)]
pub(crate) struct PageCounts(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<CountKey, Counted>>>);

/// (directory, status filter, search as compared).
type CountKey = (String, Option<String>, String);

/// Counts kept at most; past it the cache starts again.
const PAGE_COUNTS_KEPT: usize = 256;

impl PageCounts {
    fn get(&self, key: &CountKey, version: i64) -> Option<Counted> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied().filter(|c| c.version == version)
    }

    fn put(&self, key: CountKey, counted: Counted) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PAGE_COUNTS_KEPT && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, counted);
    }
}

/// The snapshot's rows, search text or statuses changed (inside the
/// writing transaction): counts of an older version are not used.
/// `added`: rows added (negative: removed). Returns whether every row
/// counts as marked (`all_marked`, see [`Store::begin_staging`]): then
/// the caller's rows need no mark. The snapshot's row is written (its
/// version moved on) before the flag is read: a status computation that
/// clears the flag meanwhile holds that row until it commits, and is
/// waited for; one that comes later sees the version moved and keeps the
/// flag (`Store::compute_staged_status`).
pub(crate) async fn snapshot_changed(tx: &mut crate::WriteTx, directory: &str, added: i64) -> Result<bool> {
    const UPSERT: &str = "INSERT INTO staging_snapshots (directory, version, row_count) VALUES ($1, 1, $2) \
         ON CONFLICT (directory) DO UPDATE SET version = staging_snapshots.version + 1, row_count = staging_snapshots.row_count + $2";
    // Read after the write (which waited for the row): not as `RETURNING`,
    // which cost SQLite's upsert ten times as much (0.4-3.5 ms a page).
    const READ: &str = "SELECT all_marked FROM staging_snapshots WHERE directory = $1";
    let all_marked: i64 = if tx.backend == Backend::Sqlite {
        // Both statements in one call: one hop to SQLite's worker thread
        // and back, not two, inside a page's write turn (each cost
        // 0.1-0.45 ms of a first sync's page). PostgreSQL takes one
        // statement per call when values are bound.
        // (`fetch_all`: it keeps the rows only; `fetch_one` would take
        // the upsert's result for the first and find no row.)
        let rows = sqlx::query(&format!("{UPSERT}; {READ}")).bind(directory).bind(added).fetch_all(&mut **tx).await?;
        rows.first().ok_or(crate::Error::Database(sqlx::Error::RowNotFound))?.try_get(0)?
    } else {
        sqlx::query(UPSERT).bind(directory).bind(added).execute(&mut **tx).await?;
        sqlx::query(READ).bind(directory).fetch_one(&mut **tx).await?.try_get(0)?
    };
    Ok(all_marked != 0)
}

/// A 64-bit FNV-1a hash: stable across builds and platforms (what is stored
/// must compare equal after an upgrade), unlike `std`'s hasher.
pub fn stable_hash(parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h as i64
}

/// The records of [`Store::staged_hashes`]: `id,hash,length,external_id`
/// one after another, the length in characters. `None` if malformed.
fn parse_hash_records(mut text: &str) -> Option<std::collections::HashMap<String, (i64, i64)>> {
    let mut out = std::collections::HashMap::new();
    while !text.is_empty() {
        let mut fields = text.splitn(4, ',');
        let id: i64 = fields.next()?.parse().ok()?;
        let hash: i64 = fields.next()?.parse().ok()?;
        let chars: usize = fields.next()?.parse().ok()?;
        let rest = fields.next()?;
        let end = match rest.char_indices().nth(chars) {
            Some((at, _)) => at,
            None if rest.chars().count() == chars => rest.len(),
            None => return None,
        };
        out.insert(rest[..end].to_string(), (id, hash));
        text = &rest[end..];
    }
    Some(out)
}

impl NewStaged<'_> {
    /// The content hash: what the enumeration saw of the entry (0xff, which
    /// UTF-8 never contains, ends each field).
    pub fn hash(&self) -> i64 {
        stable_hash(&[self.dn, self.username, self.username_key, self.name, self.email, self.groups, self.dir_state, self.problem])
    }

    /// What the import table's search looks in: the fields, lower-cased,
    /// kept apart by a character nobody types.
    fn search(&self) -> String {
        format!("{}\u{1}{}\u{1}{}", self.username_key, self.name.to_lowercase(), self.email.to_lowercase())
    }
}

/// A no-op clause that ends a subquery so that neither database pulls it
/// up into the statement, which would evaluate its expressions once per
/// reference to them.
fn subquery_fence(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "LIMIT -1 OFFSET 0",
        Backend::Postgres => "OFFSET 0",
    }
}

/// The new problem and status of every marked row (`staged_dirty` of the
/// directory `$1`): `id`, `problem`, `status`, and the row's present
/// `old_problem` and `old_status`.
///
/// The problem: the entry's own, else the first rule that finds one. A
/// username held by a user linked to another immutable id is a conflict
/// (never an inheritance): an administrator decides. Two directory entries
/// whose usernames differ only in case never become two users. A Bindery
/// user other than the linked one may already have the email.
///
/// `{fence}` ends both subqueries with a no-op `LIMIT`/`OFFSET`, which
/// keeps either database from pulling them up into the statement around
/// them: pulled up, each reference to `problem` or `status` is its whole
/// `CASE` again, subqueries and all (PostgreSQL evaluated the problem five
/// times per row; the computation over 100,000 marks took 10.7 s there and
/// 1.9 s on SQLite, 0.9 s on SQLite fenced).
///
/// How a status computation finds the rows that share a username or an
/// email with a marked row ([`status_of_marked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    /// Counted per marked row, through the snapshot's indexes of usernames
    /// and emails: few marks.
    Lookup,
    /// The directory's shared values, grouped once: many marks.
    Grouped,
    /// Only the values of the marked rows, grouped: few marks while a bulk
    /// load has the indexes of usernames and emails still to build, where
    /// each lookup would read the whole snapshot. One read of it for each
    /// of the two (a first sync at 100,000 rows with a handful of marks:
    /// the whole grouping took 0.29 s on PostgreSQL).
    MarkedGrouped,
    /// The values of the marked rows, grouped among the marked rows only:
    /// when every row that shares a value with another is marked
    /// ([`Store::compute_staged_status_closed`]), a value is shared among
    /// them exactly when it is in the snapshot.
    MarkedOnly,
}

/// Whether another row shares the username or email ([`Sharing`]): from
/// shared values, grouped (PostgreSQL hashes the list and probes it per
/// row), or by counting the rows with the value, through its index, per
/// row. They agree: a value is shared when more than one row has it.
/// Whether a Bindery user other than the linked one has the email: with
/// [`Sharing::Grouped`] on PostgreSQL, from the users counted per email
/// once (more than one, or more than none when the linked user has another
/// email); else an indexed lookup per row. They agree for the same reason.
/// The status of the marked rows, or with `all` of every row of the
/// directory (see [`marked_rows`]).
fn status_of_marked(backend: Backend, sharing: Sharing, all: bool) -> String {
    let fence = subquery_fence(backend);
    // With `MarkedGrouped`, the values grouped are those of the marked rows.
    let (marked_names, marked_emails) = match sharing {
        Sharing::MarkedGrouped => (
            "AND t.username_key IN (SELECT m.username_key FROM staged_dirty md CROSS JOIN staged_users m \
             WHERE md.directory = $1 AND m.id = md.id) ",
            "AND lower(t.email) IN (SELECT lower(m.email) FROM staged_dirty md CROSS JOIN staged_users m \
             WHERE md.directory = $1 AND m.id = md.id AND m.email <> '') ",
        ),
        _ => ("", ""),
    };
    // The rows grouped: the directory's, or with `MarkedOnly` the marked ones.
    let grouped = match sharing {
        Sharing::MarkedOnly => "staged_dirty md CROSS JOIN staged_users t WHERE md.directory = $1 AND t.id = md.id",
        _ => "staged_users t WHERE t.directory = $1",
    };
    let (same_username, same_email) = match sharing {
        Sharing::Grouped | Sharing::MarkedGrouped | Sharing::MarkedOnly => (
            format!(
                "s.username_key IN (SELECT t.username_key FROM {grouped} {marked_names}\
                 GROUP BY t.username_key HAVING COUNT(*) > 1)"
            ),
            format!(
                "lower(s.email) IN (SELECT lower(t.email) FROM {grouped} AND t.email <> '' {marked_emails}\
                 GROUP BY lower(t.email) HAVING COUNT(*) > 1)"
            ),
        ),
        Sharing::Lookup => (
            "(SELECT COUNT(*) FROM staged_users t WHERE t.directory = $1 AND t.username_key = s.username_key) > 1".to_string(),
            "(SELECT COUNT(*) FROM staged_users t WHERE t.directory = $1 AND lower(t.email) = lower(s.email)) > 1".to_string(),
        ),
    };
    // (`u`: the row's linked user, joined; `e`: the users by email.)
    let (users_by_email, other_user_email) = if sharing == Sharing::Grouped && backend == Backend::Postgres {
        (
            // How many users have each email, counted once (hashed): the
            // linked user, if it has the email, is one of them. (SQLite
            // gained nothing from it over the lookups, and its grouping
            // left the process 9 MB larger after a first sync.)
            " LEFT JOIN (SELECT lower(email) AS email, COUNT(*) AS n FROM users WHERE email <> '' GROUP BY lower(email)) e \
             ON e.email = lower(s.email)",
            "COALESCE(e.n, 0) > CASE WHEN lower(u.email) = lower(s.email) THEN 1 ELSE 0 END",
        )
    } else {
        ("", "EXISTS (SELECT 1 FROM users e WHERE lower(e.email) = lower(s.email) AND e.id <> COALESCE(s.user_id, -1))")
    };
    let (from, which) = marked_from(all);
    STATUS_OF_MARKED
        .replace("{from}", from)
        .replace("{which}", which)
        .replace("{users_by_email}", users_by_email)
        .replace("{fence}", fence)
        .replace("{same_username}", &same_username)
        .replace("{same_email}", &same_email)
        .replace("{other_user_email}", other_user_email)
        .replace("{differs}", &user_differs("s", "u"))
        .replace("{status}", &status_rule("p", "p.user_id", "p.user_differs"))
}

/// A staged row's status from its problem, its entry and its user: `row`
/// names the row (its columns `problem`, `dir_state`, `username`, `name`,
/// `email` and `external_id`), `user` is the SQL expression of its user's id.
pub(crate) fn status_case(row: &str, user: &str) -> String {
    status_rule(row, user, &format!("EXISTS (SELECT 1 FROM users u WHERE u.id = {user} AND {})", user_differs(row, "u")))
}

/// The status of a changed row as its update ([`RowWrites`]) leaves it
/// (`v`: the new values; the row keeps its id, immutable id and user): the
/// status computation that follows marks the row and computes
/// it again, and writes it only where it differs. With the entry's own
/// problem as the row's, as the write leaves it, that is where another
/// entry or user gives it a problem. Before, every changed row was written
/// a second time for its status: on PostgreSQL a new version of the row in
/// each of the snapshot's ten indexes (3.3 ms of a delta run of 100 changes).
fn rewritten_status() -> String {
    let differs = user_differs_from("v", "staged_users.external_id", "u");
    status_rule("v", "staged_users.user_id", &format!("EXISTS (SELECT 1 FROM users u WHERE u.id = staged_users.user_id AND {differs})"))
}

/// The status rule, with `differs` the condition that the row's user
/// (`user`, its id) differs from the entry. A row with no problem (nearly
/// every row) is tested once for it, and a conflict is told by its prefix,
/// compared (a `LIKE` cost SQLite a pattern match of every row).
fn status_rule(row: &str, user: &str, differs: &str) -> String {
    format!(
        "CASE WHEN {row}.problem <> '' THEN \
         CASE WHEN {} THEN 'conflict' ELSE 'invalid' END \
         WHEN {row}.dir_state = 'disabled' THEN 'disabled' \
         WHEN {user} IS NULL THEN 'new' \
         WHEN {differs} THEN 'changed' \
         ELSE 'imported' END",
        is_conflict(&format!("{row}.problem"))
    )
}

/// Whether the problem `problem` (an SQL expression) is a conflict: its
/// prefix, compared as the service's `starts_with("conflict:")` does
/// (case-sensitive, where SQLite's `LIKE` is not).
pub(crate) fn is_conflict(problem: &str) -> String {
    format!("substr({problem}, 1, 9) = 'conflict:'")
}

/// Whether user `u` differs from the entry of staged row `row`.
fn user_differs(row: &str, u: &str) -> String {
    user_differs_from(row, &format!("{row}.external_id"), u)
}

/// [`user_differs`] with the entry's immutable id the SQL expression
/// `external_id` (a row written from values that leave it out).
fn user_differs_from(row: &str, external_id: &str, u: &str) -> String {
    format!(
        "({u}.username <> {row}.username OR {u}.name <> {row}.name OR {u}.email <> {row}.email \
         OR {u}.external_id IS NULL OR {u}.external_id <> {external_id})"
    )
}

/// Each row's linked user is joined once (`u`), not looked up once per
/// rule that reads it (three lookups a row before; on PostgreSQL, with
/// every row computed, a hash join of the two tables). Where the row has
/// no user, every test of `u` is NULL, which no `WHEN` takes, as an
/// `EXISTS` over no row was false.
const STATUS_OF_MARKED: &str = "\
    SELECT p.id, p.problem, {status} AS status, p.old_problem, p.old_status \
    FROM (SELECT s.id, s.dir_state, s.user_id, s.problem AS old_problem, s.status AS old_status, \
    {differs} AS user_differs, CASE \
    WHEN s.entry_problem <> '' THEN s.entry_problem \
    WHEN s.external_id NOT LIKE 'dn:%' AND u.source <> 'local' \
    AND u.external_id IS NOT NULL AND u.external_id NOT LIKE 'dn:%' AND u.external_id <> s.external_id \
    THEN 'conflict: the username belongs to a Bindery user linked to another directory entry (' || \
    u.external_id || '); relink, rename or delete that account' \
    WHEN {same_username} THEN 'another directory entry has the same username (compared case-insensitively)' \
    WHEN s.email <> '' AND {same_email} THEN 'another directory entry has the same email' \
    WHEN u.source = 'local' THEN 'a local user has this username' \
    WHEN s.email <> '' AND {other_user_email} THEN 'another Bindery user has this email' \
    ELSE '' END AS problem \
    FROM {from} LEFT JOIN users u ON u.id = s.user_id{users_by_email} WHERE {which} {fence}) p {fence}";

/// PostgreSQL: past this many new statuses, a computation writes them with
/// one `UPDATE … FROM` (computed again) rather than by id, 500 a statement.
const STATUS_WRITES_BY_ID: usize = 20_000;

/// The marked rows of directory `$1` as `s`: those in `staged_dirty`, or
/// with `all` every row of the directory, read from the snapshot directly.
/// When every row is marked (a first enumeration, or the apply of a first
/// sync), writing 100,000 marks and joining them back cost more than the
/// computation's own reads (0.3 s of a first sync on PostgreSQL).
fn marked_rows(all: bool) -> String {
    let (from, which) = marked_from(all);
    format!("{from} WHERE {which}")
}

/// [`marked_rows`] as its tables and its condition.
fn marked_from(all: bool) -> (&'static str, &'static str) {
    match all {
        true => ("staged_users s", "s.directory = $1"),
        false => ("staged_dirty d CROSS JOIN staged_users s", "d.directory = $1 AND s.id = d.id"),
    }
}

/// What staging one page did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedPage {
    /// Ids of the page's rows (new, changed and unchanged).
    pub ids: Vec<i64>,
    pub inserted: u64,
    pub updated: u64,
    /// The rows this page inserted, as (immutable id, row id).
    pub new_rows: Vec<(String, i64)>,
}

/// A staged row's fields for a bulk statement, in the order of
/// [`staged_columns`] (`key`: its id, or its immutable id for an insert),
/// its search text ([`NewStaged::search`]) made for the statement.
fn staged_cells<'a>(key: crate::batch::Cell<'a>, r: &NewStaged<'a>, hash: i64) -> [crate::batch::Cell<'a>; 11] {
    use crate::batch::Cell::{Int, Owned, Text};
    [
        key,
        Text(r.dn),
        Text(r.username),
        Text(r.username_key),
        Text(r.name),
        Text(r.email),
        Text(r.groups),
        Text(r.dir_state),
        Text(r.problem),
        Owned(r.search()),
        Int(hash),
    ]
}

/// The columns of [`staged_cells`]' rows (`key`: the first).
const fn staged_columns(key: crate::Col) -> [crate::Col; 11] {
    use crate::Col::{Int, Text};
    [
        key,
        Text("dn"),
        Text("username"),
        Text("username_key"),
        Text("name"),
        Text("email"),
        Text("groups"),
        Text("dir_state"),
        Text("problem"),
        Text("search"),
        Int("hash"),
    ]
}

/// The columns of an update of staged rows, by id.
const STAGED_BY_ID: [crate::Col; 11] = staged_columns(crate::Col::Int("id"));

/// The columns of an insert of staged rows, by immutable id.
const STAGED_BY_EXTERNAL_ID: [crate::Col; 11] = staged_columns(crate::Col::Text("external_id"));

/// An insert of new staged rows (`rows`: a query with the columns
/// `directory`, `external_id`, `dn`, `username`, `username_key`, `name`,
/// `email`, `groups`, `dir_state`, `problem`, `search` and `hash`) that
/// links each to the user with its immutable id, if any, and settles it
/// under the rules hash `rules` (a placeholder) as
/// [`crate::sync::settle_applied`] would have right after: one write of
/// each row of a first sync's page instead of two (`first_load`).
/// `fence`: the no-op `OFFSET` that keeps the lookup of each row's user
/// evaluated once a row (PostgreSQL inlined it for each use). The user is
/// then joined once for its plan key and its status (each looked it up
/// again before, by its id).
fn linked_insert(backend: Backend, rows: &str, rules: &str, on_conflict: &str, fence: &str) -> String {
    format!(
        "INSERT INTO staged_users (directory, external_id, dn, username, username_key, name, email, groups, dir_state, \
         entry_problem, problem, search, hash, user_id, settled, plan_key, status) \
         SELECT t.directory, t.external_id, t.dn, t.username, t.username_key, t.name, t.email, t.groups, t.dir_state, \
         t.problem, t.problem, t.search, t.hash, t.uid, CASE WHEN t.uid IS NULL THEN 0 ELSE 1 END, \
         CASE WHEN t.uid IS NULL THEN NULL ELSE {} END, {} \
         FROM (SELECT r.*, (SELECT c.id FROM users c WHERE c.external_id = r.external_id) AS uid FROM ({rows}) r{fence}) t \
         LEFT JOIN users u ON u.id = t.uid WHERE true{on_conflict}{}",
        crate::sync::plan_key_joined("t", rules),
        status_rule("t", "t.uid", &user_differs("t", "u")),
        crate::batch::returning_keys(backend, "staged_users"),
    )
}

/// The stored `(id, hash)` of a page's rows, by immutable id, read inside
/// the page's transaction (no snapshot was read before the enumeration).
async fn read_stored(
    tx: &mut crate::WriteTx,
    directory: &str,
    rows: &[(&NewStaged<'_>, i64)],
) -> Result<std::collections::HashMap<String, (i64, i64)>> {
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(500) {
        let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT id, external_id, hash FROM staged_users WHERE directory = $1 AND external_id IN ({list})");
        let mut q = sqlx::query(&sql).bind(directory);
        for (r, _) in chunk {
            q = q.bind(r.external_id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            stored.insert(row.try_get(1)?, (row.try_get(0)?, row.try_get(2)?));
        }
    }
    Ok(stored)
}

/// After an insert of staged rows: the ids it returned go to `out` and
/// to `written`; an entry it did not insert (an earlier page of the run
/// staged it: overlapping search OUs) is looked up and kept as it is.
async fn note_inserted(
    tx: &mut crate::WriteTx,
    directory: &str,
    chunk: &[(&NewStaged<'_>, i64)],
    returned: Vec<(i64, String)>,
    out: &mut StagedPage,
    written: &mut Vec<i64>,
) -> Result<()> {
    out.inserted += returned.len() as u64;
    let start = out.new_rows.len();
    for (id, external_id) in returned {
        out.ids.push(id);
        written.push(id);
        out.new_rows.push((external_id, id));
    }
    let inserted: std::collections::HashSet<&str> = out.new_rows[start..].iter().map(|(e, _)| e.as_str()).collect();
    let others: Vec<&str> = chunk.iter().map(|(r, _)| r.external_id).filter(|e| !inserted.contains(e)).collect();
    drop(inserted);
    for external_id in others {
        let row = sqlx::query("SELECT id FROM staged_users WHERE directory = $1 AND external_id = $2")
            .bind(directory)
            .bind(external_id)
            .fetch_one(&mut **tx)
            .await?;
        out.ids.push(row.try_get(0)?);
    }
    Ok(())
}

/// A page's staged rows compared with the stored ones
/// ([`Store::row_writes`]) and made into statements, before the write
/// transaction: [`RowWrites::bound`] binds them, still outside it, and
/// the bound statements' `run` runs them in it. On SQLite the transaction holds
/// the process's one write turn, and a first sync's pages queue for it:
/// each page made its 1,000 search texts and bound its 19,000 values in
/// the turn while the database waited. Bound before, the median turn a
/// page held at 100,000 users went from 19.2-20.0 ms to 18.1-19.6 ms
/// (three alternated runs of `scripts/bench import`).
pub(crate) struct RowWrites<'r, 'a> {
    backend: Backend,
    directory: &'r str,
    link: Option<&'r str>,
    /// The ids of the rows found stored (changed or not), in the page's order.
    ids: Vec<i64>,
    /// The ids of the changed rows, which the updates rewrite.
    changed: Vec<i64>,
    /// One update a chunk of changed rows, with its number of rows.
    updates: Vec<(u64, crate::batch::Statement<'a>)>,
    /// One insert a chunk of new rows.
    inserts: Vec<RowInsert<'r, 'a>>,
}

/// An insert of a chunk of a page's new rows ([`RowWrites`]).
struct RowInsert<'r, 'a> {
    /// The rows, with their content hashes.
    rows: Vec<(&'r NewStaged<'a>, i64)>,
    statement: crate::batch::Statement<'a>,
    /// PostgreSQL, when an earlier page of the run may have inserted one
    /// of the rows: the insert that skips such a row, run only when the
    /// insert without it meets one ([`RowWrites::run`]).
    skipping: Option<String>,
}

impl<'r, 'a> RowWrites<'r, 'a> {
    /// The statements with their rows bound, in the order they run: the
    /// updates, then the inserts.
    pub(crate) fn bound(&self) -> Result<crate::batch::Bound<'_, Self>> {
        let mut queries = Vec::with_capacity(self.updates.len() + self.inserts.len());
        for (_, st) in &self.updates {
            queries.push(st.batch.bind(sqlx::query(&st.sql))?);
        }
        for RowInsert { statement: st, .. } in &self.inserts {
            let mut q = st.batch.bind(sqlx::query(&st.sql))?.bind(self.directory);
            if let Some(rules) = self.link {
                q = q.bind(rules);
            }
            queries.push(q);
        }
        Ok(crate::batch::Bound { writes: self, queries })
    }
}

impl crate::batch::Bound<'_, RowWrites<'_, '_>> {
    /// Run the statements inside the caller's transaction. Returns the ids
    /// of the rows written (new or changed), which the caller passes to
    /// [`note_written`] last before its commit.
    pub(crate) async fn run(self, tx: &mut crate::WriteTx, out: &mut StagedPage) -> Result<Vec<i64>> {
        let w = self.writes;
        out.ids.extend_from_slice(&w.ids);
        let mut written = w.changed.clone();
        let mut queries = self.queries.into_iter();
        for ((rows, _), q) in w.updates.iter().zip(queries.by_ref()) {
            q.execute(&mut **tx).await?;
            out.updated += rows;
        }
        for (RowInsert { rows: chunk, statement: st, skipping }, q) in w.inserts.iter().zip(queries) {
            let returned = match skipping {
                None => crate::batch::inserted_keys(tx, w.backend, "staged_users", q).await?,
                Some(skipping) => {
                    // `ON CONFLICT DO NOTHING` checks each row against the
                    // unique index before it inserts it, and confirms it
                    // after: it doubled the insert's cost (1,000 rows, 13
                    // against 7 ms in `psql`). An earlier page's row is
                    // rare (search OUs that overlap), so the insert is
                    // tried without it, and made again with it only when
                    // it meets one.
                    sqlx::query("SAVEPOINT staged_insert").execute(&mut **tx).await?;
                    match crate::batch::inserted_keys(tx, w.backend, "staged_users", q).await {
                        Ok(returned) => {
                            sqlx::query("RELEASE SAVEPOINT staged_insert").execute(&mut **tx).await?;
                            returned
                        }
                        Err(e) if e.is_unique_violation() => {
                            sqlx::query("ROLLBACK TO SAVEPOINT staged_insert").execute(&mut **tx).await?;
                            let mut q = st.batch.bind(sqlx::query(skipping))?.bind(w.directory);
                            if let Some(rules) = w.link {
                                q = q.bind(rules);
                            }
                            crate::batch::inserted_keys(tx, w.backend, "staged_users", q).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            note_inserted(tx, w.directory, chunk, returned, out, &mut written).await?;
        }
        Ok(written)
    }
}

/// A page's rows, each entry once (search OUs that overlap list one
/// twice), with its content hash, computed once.
pub(crate) fn once_with_hashes<'r, 'a>(rows: &'r [NewStaged<'a>]) -> Vec<(&'r NewStaged<'a>, i64)> {
    let mut seen = std::collections::HashSet::new();
    rows.iter().filter(|r| seen.insert(r.external_id)).map(|r| (r, r.hash())).collect()
}

/// After a page's writes ([`RowWrites`]), last before the commit: the
/// snapshot's version moves on, and the rows written (new or changed) get a new
/// status: marked, unless every row counts as marked already. Last,
/// because the snapshot's row stays locked until the commit: two pages
/// stored at once (PostgreSQL) wait for each other only that long.
pub(crate) async fn note_written(tx: &mut crate::WriteTx, backend: Backend, directory: &str, inserted: u64, written: &[i64]) -> Result<()> {
    if !written.is_empty() && !snapshot_changed(tx, directory, inserted as i64).await? {
        mark_dirty(tx, backend, directory, written).await?;
    }
    Ok(())
}

/// Mark rows for a new status (inside the caller's transaction).
pub(crate) async fn mark_dirty(tx: &mut crate::WriteTx, backend: Backend, directory: &str, ids: &[i64]) -> Result<()> {
    let sql = format!(
        "INSERT INTO staged_dirty (directory, id) SELECT $1, j.id FROM ({}) j WHERE true ON CONFLICT DO NOTHING",
        crate::json_ids(backend, 2)
    );
    for chunk in ids.chunks(5000) {
        sqlx::query(&sql).bind(directory).bind(crate::to_json(chunk)?).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Mark the start of an enumeration (`run`) of a directory's snapshot.
    /// The snapshot stays as it is: pages change it in place, and only
    /// [`Store::finish_staging`] after a complete enumeration removes rows.
    ///
    /// Into an empty snapshot (a first enumeration), every row it writes
    /// will need a status: the snapshot is flagged `all_marked`, its pages
    /// write no marks, and the next status computation reads every row
    /// (and clears the flag). A run that stops half-way leaves the flag for
    /// whichever computation comes next.
    pub async fn begin_staging(&self, directory: &str, run: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO staging_snapshots (directory, generation, all_marked) \
             VALUES ($1, $2, CASE WHEN EXISTS (SELECT 1 FROM staged_users WHERE directory = $1) THEN 0 ELSE 1 END) \
             ON CONFLICT (directory) DO UPDATE SET generation = excluded.generation, \
             all_marked = CASE WHEN excluded.all_marked = 1 THEN 1 ELSE staging_snapshots.all_marked END",
        )
        .bind(directory)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// `(generation, complete_generation)`: the enumeration that last
    /// wrote the snapshot and the last one that completed.
    pub async fn staging_generation(&self, directory: &str) -> Result<(i64, i64)> {
        let row = sqlx::query("SELECT generation, complete_generation FROM staging_snapshots WHERE directory = $1")
            .bind(directory)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (0, 0),
        })
    }

    /// Diff a page of enumerated users into the snapshot, in one
    /// transaction: the stored rows of the page's ids are read in one
    /// query; new ones are inserted, those whose content hash differs are
    /// updated (and marked for a new status), the rest are not touched.
    /// An entry seen twice (search OUs that overlap) is kept once.
    pub async fn stage_page(&self, directory: &str, rows: &[NewStaged<'_>]) -> Result<StagedPage> {
        self.stage_rows(directory, rows, None).await
    }

    /// Every staged row of the directory as `external_id → (id, content
    /// hash)`: read once before a full enumeration, so that its pages are
    /// compared in memory ([`Store::stage_page_known`]) and a page where
    /// nothing changed costs no database work at all.
    ///
    /// Read as one text of records, not one row each: a row costs the
    /// driver an allocation per column and a hop between threads, and at
    /// 100,000 rows the read was a fifth of a no-change resync on SQLite
    /// (211 ms). Each record is `id,hash,length,external_id`, the length in
    /// characters, so that no character of an immutable id (a DN-based one
    /// may hold commas) can break it.
    pub async fn staged_hashes(&self, directory: &str) -> Result<std::collections::HashMap<String, (i64, i64)>> {
        let aggregate = match self.backend {
            Backend::Sqlite => "group_concat",
            Backend::Postgres => "string_agg",
        };
        let text: Option<String> = sqlx::query(&format!(
            "SELECT {aggregate}(CAST(id AS TEXT) || ',' || CAST(hash AS TEXT) || ',' || CAST(length(external_id) AS TEXT) || ',' || external_id, '') \
             FROM staged_users WHERE directory = $1"
        ))
        .bind(directory)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        parse_hash_records(text.as_deref().unwrap_or(""))
            .ok_or_else(|| crate::Error::Database(sqlx::Error::Decode("the snapshot's hashes did not read back as records".into())))
    }

    /// [`Store::stage_page`] against the rows as [`Store::staged_hashes`]
    /// read them before the enumeration, or [`Store::staged_known`] before a
    /// delta read's staging (either holds the directory's lease, so nothing
    /// else stages meanwhile): unchanged rows are not read or
    /// written; an entry that is not in `known` is inserted (one an
    /// earlier page of the run already inserted is left as it is).
    pub async fn stage_page_known(
        &self,
        directory: &str,
        rows: &[NewStaged<'_>],
        known: &std::collections::HashMap<String, (i64, i64)>,
    ) -> Result<StagedPage> {
        self.stage_rows(directory, rows, Some(known)).await
    }

    /// `known`: the stored rows, read before the enumeration (`None`: read
    /// the page's rows now). With `known`, a row not in it is inserted
    /// without a read first, and one already staged by an earlier page of
    /// the run is kept.
    async fn stage_rows(
        &self,
        directory: &str,
        rows: &[NewStaged<'_>],
        known: Option<&std::collections::HashMap<String, (i64, i64)>>,
    ) -> Result<StagedPage> {
        let rows = once_with_hashes(rows);
        let mut out = StagedPage { ids: Vec::with_capacity(rows.len()), ..Default::default() };
        if rows.is_empty() {
            return Ok(out);
        }
        // Nothing new or changed: no transaction at all.
        if let Some(known) = known {
            let same = |(r, hash): &(&NewStaged<'_>, i64)| known.get(r.external_id).is_some_and(|(_, h)| h == hash);
            if rows.iter().all(same) {
                out.ids.extend(rows.iter().filter_map(|(r, _)| known.get(r.external_id).map(|(id, _)| *id)));
                return Ok(out);
            }
        }
        let mut tx;
        let written = match known {
            // Compared, made into statements and bound before the write
            // turn is taken ([`RowWrites`]).
            Some(known) => {
                let writes = self.row_writes(directory, rows, known, None, true);
                let bound = writes.bound()?;
                tx = self.page_tx().await?;
                bound.run(&mut tx, &mut out).await?
            }
            None => {
                tx = self.page_tx().await?;
                let stored = read_stored(&mut tx, directory, &rows).await?;
                let writes = self.row_writes(directory, rows, &stored, None, false);
                writes.bound()?.run(&mut tx, &mut out).await?
            }
        };
        note_written(&mut tx, self.backend, directory, out.inserted, &written).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// A page's rows (each entry once, with its hash) compared with
    /// `stored` (`external_id → (id, hash)`) and made into statements
    /// ([`RowWrites`]): unchanged rows are only counted, changed ones
    /// updated, new ones inserted (with `link`, a first sync's rules hash,
    /// linked to the users the page created and settled: [`linked_insert`]).
    /// `read_before`: `stored` was read before the enumeration, so an
    /// earlier page of the run may have inserted an entry it lacks.
    pub(crate) fn row_writes<'r, 'a>(
        &self,
        directory: &'r str,
        rows: Vec<(&'r NewStaged<'a>, i64)>,
        stored: &std::collections::HashMap<String, (i64, i64)>,
        link: Option<&'r str>,
        read_before: bool,
    ) -> RowWrites<'r, 'a> {
        let mut writes = RowWrites {
            backend: self.backend,
            directory,
            link,
            ids: Vec::new(),
            changed: Vec::new(),
            updates: Vec::new(),
            inserts: Vec::new(),
        };
        let mut new = Vec::new();
        let mut changed = Vec::new();
        for (r, hash) in rows {
            match stored.get(r.external_id) {
                Some((id, h)) => {
                    writes.ids.push(*id);
                    if *h != hash {
                        changed.push((*id, r, hash));
                    }
                }
                None => new.push((r, hash)),
            }
        }
        // A chunk's rows are bound as one batch (`crate::batch`; on SQLite,
        // 12,500 statements and 2.9 s of a first sync's staging when they
        // were bound by name, ten rows a statement).
        for chunk in changed.chunks(1000) {
            let mut batch = crate::batch::Batch::new(self.backend, &STAGED_BY_ID, chunk.len());
            for (id, r, hash) in chunk {
                writes.changed.push(*id);
                batch.push(staged_cells(crate::batch::Cell::Int(*id), r, *hash));
            }
            let sql = format!(
                "UPDATE staged_users SET dn = v.dn, username = v.username, username_key = v.username_key, name = v.name, email = v.email, \
                 groups = v.groups, dir_state = v.dir_state, entry_problem = v.problem, problem = v.problem, search = v.search, \
                 hash = v.hash, settled = 0, status = {} FROM ({}) AS v WHERE staged_users.id = v.id",
                rewritten_status(),
                batch.source()
            );
            writes.updates.push((chunk.len() as u64, crate::batch::Statement { sql, batch }));
        }
        // An earlier page of this run may have inserted the entry: skipped.
        // On PostgreSQL only when the insert meets one (`RowWrites::run`).
        let skip = " ON CONFLICT (directory, external_id) DO NOTHING";
        let on_conflict = if read_before && self.backend == Backend::Sqlite { skip } else { "" };
        let retried = read_before && self.backend == Backend::Postgres;
        for chunk in new.chunks(1000) {
            let mut batch = crate::batch::Batch::new(self.backend, &STAGED_BY_EXTERNAL_ID, chunk.len());
            for (r, hash) in chunk {
                batch.push(staged_cells(crate::batch::Cell::Text(r.external_id), r, *hash));
            }
            let rows = format!("SELECT {} AS directory, r.* FROM ({}) r", batch.param(1), batch.source());
            let insert = |on_conflict: &str| match link {
                None => format!(
                    "INSERT INTO staged_users (directory, external_id, dn, username, username_key, name, email, groups, dir_state, \
                     entry_problem, problem, search, hash) SELECT t.directory, t.external_id, t.dn, t.username, t.username_key, t.name, \
                     t.email, t.groups, t.dir_state, t.problem, t.problem, t.search, t.hash FROM ({rows}) t WHERE true{on_conflict}{}",
                    crate::batch::returning_keys(self.backend, "staged_users")
                ),
                // The fence keeps each row's user looked up once (PostgreSQL
                // inlined the lookup for each use; SQLite's form of it).
                Some(_) => linked_insert(
                    self.backend,
                    &rows,
                    &batch.param(2),
                    on_conflict,
                    if self.backend == Backend::Sqlite { " LIMIT -1 OFFSET 0" } else { " OFFSET 0" },
                ),
            };
            let sql = insert(on_conflict);
            let skipping = retried.then(|| insert(skip));
            writes.inserts.push(RowInsert { rows: chunk.to_vec(), statement: crate::batch::Statement { sql, batch }, skipping });
        }
        writes
    }

    /// Stage rows outside an enumeration (tests, tools): [`Store::stage_page`].
    pub async fn insert_staged(&self, directory: &str, rows: &[NewStaged<'_>]) -> Result<()> {
        self.stage_page(directory, rows).await.map(|_| ())
    }

    /// End a complete enumeration (`run`): rows it did not see (`seen` holds
    /// the ids of every row its pages staged) leave the snapshot, and the
    /// rows that shared a username or email with them get a new status.
    /// Never called for an incomplete enumeration: the previous snapshot
    /// stays, so nobody is taken for missing. Returns how many rows left.
    ///
    /// `known`: the rows as [`Store::staged_hashes`] read them before the
    /// enumeration (which held the directory's lease, so no other writer
    /// added any): the rows to remove are found without reading the
    /// snapshot again. `None`: read its ids now. `refresh`: refresh the
    /// statistics whatever the share of rows written (after a bulk load,
    /// whose end left that to this: [`Store::end_bulk_load_unanalysed`]).
    pub async fn finish_staging(
        &self,
        directory: &str,
        run: i64,
        seen: &std::collections::HashSet<i64, impl std::hash::BuildHasher>,
        known: Option<&std::collections::HashMap<String, (i64, i64)>>,
        refresh: bool,
    ) -> Result<u64> {
        let gone: Vec<i64> = match known {
            Some(known) => known.values().map(|(id, _)| *id).filter(|id| !seen.contains(id)).collect(),
            None => sqlx::query("SELECT id FROM staged_users WHERE directory = $1")
                .bind(directory)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<Vec<i64>, _>>()?
                .into_iter()
                .filter(|id| !seen.contains(id))
                .collect(),
        };
        let total = seen.len() + gone.len();
        // Whether the statistics need a refresh (PostgreSQL only: SQLite's
        // refresh does nothing). The rows written are counted only when
        // `refresh` does not decide it already (the count of a first
        // sync's 100,000 rows took 5 ms on SQLite, for nothing).
        let refresh = match self.backend {
            Backend::Sqlite => false,
            Backend::Postgres if refresh => true,
            Backend::Postgres => {
                // (All of them when every row counts as marked.)
                let written: i64 = sqlx::query(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM staging_snapshots WHERE directory = $1 AND all_marked = 1) \
                     THEN (SELECT COUNT(*) FROM staged_users WHERE directory = $1) ELSE (SELECT COUNT(*) FROM staged_dirty WHERE directory = $1) END",
                )
                .bind(directory)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
                (written as usize + gone.len()) * 10 > total.max(10_000)
            }
        };
        let mut tx = self.write_tx().await?;
        for chunk in gone.chunks(500) {
            drop_staged_rows(&mut tx, directory, chunk).await?;
        }
        sqlx::query(
            "INSERT INTO staging_snapshots (directory, generation, complete_generation) VALUES ($1, $2, $2) \
             ON CONFLICT (directory) DO UPDATE SET complete_generation = excluded.complete_generation",
        )
        .bind(directory)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if refresh {
            self.refresh_statistics(true).await?;
        }
        Ok(gone.len() as u64)
    }

    /// PostgreSQL: refresh the planner's statistics of the snapshot and the
    /// users after a bulk change (a first sync of 100,000 users left them
    /// empty, and the searches and status checks were planned for an empty
    /// table). Without `vacuum` (early in an apply), the run's items too:
    /// the apply reads them in id order 500 at a time, and planned for an
    /// empty table each read collected every item left and sorted them
    /// (80 ms a read at 50,000 items, 3 s over a first sync; under 1 ms
    /// through the index once analysed). SQLite: nothing.
    ///
    /// With `vacuum` (once a bulk change is done, the apply's status
    /// computation included), it also vacuums them, and the run's items
    /// (each applied item's outcome was rewritten): a
    /// bulk change leaves as many dead row versions as it wrote, which every
    /// index scan of the next minutes walks until autovacuum comes (a delta run right after a first sync spent 130 ms
    /// finding 200 marks among 100,000 dead ones), and a count can be
    /// answered from an index only once the visibility map is set.
    ///
    /// Each table on a connection of its own, side by side: one statement
    /// did them one after the other, one core busy (a first sync of
    /// 100,000 users spent 0.6 s in it).
    ///
    /// While a bulk load's page indexes are still to be built, `vacuum`
    /// only analyses, and only the columns the rest of the run filters and
    /// joins on: the vacuum and the whole statistics come with those
    /// indexes, once the run has ended ([`Store::end_bulk_load`]). Nothing
    /// the run reads next needs them (a first sync's rows were inserted
    /// whole, and leave few dead versions), and at 100,000 users they were
    /// 0.3-0.4 s of the run, the statistics of the text columns most of it
    /// (in `psql`: the snapshot's 0.38-0.48 s against 0.15-0.17 s for these
    /// columns, the users' 0.34-0.36 s against 0.11-0.12 s).
    pub async fn refresh_statistics(&self, vacuum: bool) -> Result<()> {
        if self.backend == Backend::Postgres {
            let statements: &[&str] = match vacuum {
                true if self.bulk_load_pending().await? => &[
                    "ANALYZE staged_users (directory, user_id, settled, status, problem, entry_problem)",
                    "ANALYZE users (updated_at, created_at, source)",
                    "ANALYZE staged_dirty",
                    "ANALYZE sync_items (run_id, action, outcome, staged_id)",
                ],
                true => &VACUUM_ANALYZE_BULK,
                false => &["ANALYZE staged_users", "ANALYZE users", "ANALYZE sync_items"],
            };
            side_by_side(&self.pool, statements).await?;
        }
        Ok(())
    }

    /// PostgreSQL, early in a large apply: the statistics of the users
    /// and the run's items, which the apply's reads and inserts are
    /// planned with ([`Store::refresh_statistics`] explains why). Not the
    /// snapshot's: the enumeration analysed it, and the apply reads it by
    /// id only (a third of a second on a first sync). SQLite: nothing.
    pub async fn analyze_apply_inputs(&self) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("ANALYZE users, sync_items").execute(&self.pool).await?;
        }
        Ok(())
    }

    /// PostgreSQL, after a bulk apply and its status computation: vacuum
    /// the tables it wrote ([`Store::refresh_statistics`] with `vacuum`),
    /// but analyse only the snapshot: the users and the run's items were
    /// analysed just before the status computation, which wrote neither.
    /// Analysing the four tables again was half a second of a first sync.
    /// Nothing while a bulk load is pending: its end vacuums, and analyses
    /// the snapshot once its indexes exist. SQLite: nothing.
    pub async fn vacuum_after_apply(&self) -> Result<()> {
        if self.backend != Backend::Postgres || self.bulk_load_pending().await? {
            return Ok(());
        }
        side_by_side(&self.pool, &["VACUUM (ANALYZE) staged_users", "VACUUM users", "VACUUM staged_dirty", "VACUUM sync_items"]).await
    }

    /// Delete a directory's whole snapshot.
    pub async fn clear_staged(&self, directory: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let gone = sqlx::query("DELETE FROM staged_users WHERE directory = $1").bind(directory).execute(&mut *tx).await?.rows_affected();
        snapshot_changed(&mut tx, directory, -(gone as i64)).await?;
        sqlx::query("DELETE FROM staged_dirty WHERE directory = $1").bind(directory).execute(&mut *tx).await?;
        // The next plan reads everything (and every user for missing ones).
        sqlx::query("DELETE FROM missing_check WHERE directory = $1").bind(directory).execute(&mut *tx).await?;
        sqlx::query("UPDATE staging_snapshots SET plan_rules = NULL WHERE directory = $1").bind(directory).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Link staged rows to local users (by immutable id, then by name) and
    /// compute their status, in a few set-based statements — only for the
    /// rows that need it: those staged or changed since (`staged_dirty`), those
    /// with a problem found by a rule (a resolved conflict or duplicate is
    /// computed anew), those linked to or matching a user changed since the
    /// last computation (or deleted), and the rows sharing a username or
    /// email with any of these.
    ///
    /// "Changed since" compares `users.updated_at` with the newest one the
    /// last computation saw (its watermark), and how many users had that
    /// time then: when none is newer and as many have it, no user changed.
    pub async fn compute_staged_status(&self, directory: &str) -> Result<()> {
        self.compute_status(directory, false).await
    }

    /// [`Store::compute_staged_status`] when every row that shares a
    /// username or email with another row is marked already
    /// ([`Store::mark_first_load`] said so): no mark of neighbours is
    /// looked for, and the values shared are found among the marked rows
    /// only ([`Sharing::MarkedOnly`]), without reading the snapshot.
    pub async fn compute_staged_status_closed(&self, directory: &str) -> Result<()> {
        self.compute_status(directory, true).await
    }

    /// See [`Store::compute_staged_status`]; `closed`: see
    /// [`Store::compute_staged_status_closed`].
    async fn compute_status(&self, directory: &str, closed: bool) -> Result<()> {
        let mut tx = self.write_tx().await?;
        // One round trip for what the computation starts from: the newest
        // user change the last one saw, the newest now, the rows marked
        // already (written, added or next to a removed one since the last
        // computation), how many users changed since, the snapshot's rows,
        // whether every row counts as marked (`Store::begin_staging`) and
        // the snapshot's version then (see the end)
        // and whether a bulk load has indexes still to build (`bulk.rs`).
        let dropped = crate::bulk::LOAD_PENDING;
        let row = sqlx::query(&format!(
            "SELECT s.since, n.newest, (SELECT COUNT(*) FROM staged_dirty WHERE directory = $1), \
             (SELECT COUNT(*) FROM users WHERE updated_at > s.since), s.row_count, {dropped}, s.all_marked, s.version, \
             (SELECT COUNT(*) FROM users WHERE updated_at = s.since), s.status_users, \
             (SELECT COUNT(*) FROM users WHERE updated_at = n.newest) \
             FROM (SELECT COALESCE(MAX(status_at), -1) AS since, COALESCE(MAX(row_count), 0) AS row_count, \
             COALESCE(MAX(all_marked), 0) AS all_marked, COALESCE(MAX(version), 0) AS version, \
             COALESCE(MAX(status_users), -1) AS status_users \
             FROM staging_snapshots WHERE directory = $1) s CROSS JOIN (SELECT COALESCE(MAX(updated_at), 0) AS newest FROM users) n"
        ))
        .bind(directory)
        .fetch_one(&mut *tx)
        .await?;
        let since: i64 = row.try_get(0)?;
        let newest: i64 = row.try_get(1)?;
        let pending: i64 = row.try_get(2)?;
        let users_newer: i64 = row.try_get(3)?;
        let users_at_since: i64 = row.try_get(8)?;
        // Users changed since the last computation, or with its time.
        let users_since = users_newer + users_at_since;
        let rows: i64 = row.try_get(4)?;
        let flagged = row.try_get::<i64, _>(6)? != 0;
        let version: i64 = row.try_get(7)?;
        // No user changed since the last computation: none is newer than
        // its watermark, and as many have the watermark's time as then (a
        // user changed again has a newer time; one deleted marked its rows).
        // Each change of a user moves its `updated_at` on, so the count
        // tells a user written later in the watermark's millisecond.
        let same_at_since = users_at_since == row.try_get::<i64, _>(9)?;
        let users_unchanged = users_newer == 0 && same_at_since;
        // The users changed since: those newer than the watermark, and those
        // with its time only when their number changed (the last apply's
        // users have it: they were seen).
        let changed_from = if same_at_since { since + 1 } else { since };
        let users_at_newest: i64 = row.try_get(10)?;
        // A bulk load's snapshot has no index to look up a shared name or
        // email by (`bulk.rs`).
        let bulk_load: bool = row.try_get::<i64, _>(5)? != 0;
        // Many marks: shared names and emails are grouped once, not looked
        // up per row. Few while a bulk load has no index to look them up
        // by: only the marked rows' values are grouped.
        let sharing = if closed && !flagged {
            Sharing::MarkedOnly
        } else if (flagged && rows > 5000) || pending + users_since > 5000 {
            Sharing::Grouped
        } else if bulk_load {
            Sharing::MarkedGrouped
        } else {
            Sharing::Lookup
        };
        // Statements that read the whole snapshot (PostgreSQL only: SQLite
        // has neither the planner settings nor the table VACUUM below).
        let many = self.backend == Backend::Postgres && !matches!(sharing, Sharing::Lookup | Sharing::MarkedOnly);
        if self.backend == Backend::Postgres && !many {
            // PostgreSQL plans these statements from statistics taken when the
            // marks table was full (a first sync) and cannot estimate
            // `problem <> entry_problem`: for a small change it hashed the
            // whole snapshot. When few rows can be marked, index paths only.
            // No parallel workers either: a worker takes milliseconds to
            // start, and for 200 marks the status read took 10-17 ms
            // with two of them and 4 ms without. One round trip for
            // the four settings (`set_config(…, true)` is `SET LOCAL`).
            sqlx::query(
                "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true), \
                 set_config('enable_mergejoin', 'off', true), set_config('max_parallel_workers_per_gather', '0', true)",
            )
            .execute(&mut *tx)
            .await?;
        }
        // Every row marked already (an enumeration that wrote the whole
        // snapshot): no mark below can add one. Only marks of the
        // directory's rows exist (a row leaves with its mark), so the count
        // says when to check; the check is exact.
        let mut all_marked = flagged
            || rows > 0
                && pending >= rows
                && sqlx::query(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM staged_users s WHERE s.directory = $1 \
                 AND NOT EXISTS (SELECT 1 FROM staged_dirty d WHERE d.directory = $1 AND d.id = s.id)) THEN 0 ELSE 1 END",
                )
                .bind(directory)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>(0)?
                    == 1;
        if !all_marked && rows > 5000 && users_since * 2 > rows {
            // Most rows' users changed (the apply of a first sync): every
            // row is marked, which costs less than finding which. Not as
            // marks: the statements below read every row (`marked_rows`).
            all_marked = true;
        }
        // Each mark is driven by an index (rows sharing a name or email with
        // a marked one, users changed since, rows with a problem a rule
        // found): a delta run never reads the whole snapshot here. Rows of a
        // deleted user were marked when it was deleted (`delete_user`).
        // `CROSS JOIN` fixes SQLite's join order (the small side first;
        // without statistics it would walk the snapshot); PostgreSQL plans
        // it as any join.
        //
        // Two rows with one username or email: both are compared again. Only
        // the rows marked so far need this: whether a username or email is
        // shared changes only when a row is written, added or removed, and
        // each of those marked its row (a removal, the rows sharing its
        // name and email). A row that already has a duplicate's problem is
        // marked by the rule-problem mark below. After an apply nothing is
        // marked yet, and these cost nothing: on a first sync they
        // were the neighbours of 100,000 rows, found again.
        let neighbours = [
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users WHERE directory = $1 AND username_key IN \
             (SELECT s.username_key FROM staged_users s JOIN staged_dirty d ON d.id = s.id AND d.directory = $1) ON CONFLICT DO NOTHING",
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users WHERE directory = $1 AND email <> '' AND lower(email) IN \
             (SELECT lower(s.email) FROM staged_users s JOIN staged_dirty d ON d.id = s.id AND d.directory = $1 WHERE s.email <> '') \
             ON CONFLICT DO NOTHING",
        ];
        for sql in neighbours.into_iter().filter(|_| pending > 0 && !all_marked && sharing != Sharing::MarkedOnly) {
            sqlx::query(sql).bind(directory).execute(&mut *tx).await?;
        }
        let mark = [
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users \
             WHERE directory = $1 AND problem <> entry_problem ON CONFLICT DO NOTHING",
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM (\
             SELECT s.directory, s.id FROM users u CROSS JOIN staged_users s \
               WHERE u.updated_at >= $2 AND s.directory = $1 AND s.user_id = u.id \
             UNION SELECT s.directory, s.id FROM users u CROSS JOIN staged_users s \
               WHERE u.updated_at >= $2 AND s.directory = $1 AND s.username_key = u.username_key \
             UNION SELECT s.directory, s.id FROM users u CROSS JOIN staged_users s \
               WHERE u.updated_at >= $2 AND u.external_id IS NOT NULL AND s.directory = $1 AND s.external_id = u.external_id \
             UNION SELECT s.directory, s.id FROM users u CROSS JOIN staged_users s \
               WHERE u.updated_at >= $2 AND u.email <> '' AND s.directory = $1 AND lower(s.email) = lower(u.email)) m WHERE true \
             ON CONFLICT DO NOTHING",
        ];
        if !all_marked {
            let [rule_problems, users_changed] = mark;
            sqlx::query(rule_problems).bind(directory).execute(&mut *tx).await?;
            if !users_unchanged {
                sqlx::query(users_changed).bind(directory).bind(changed_from).execute(&mut *tx).await?;
            }
        }
        self.relink_marked(&mut tx, directory, all_marked).await?;
        // Every row marked: the marked rows' values are all the values.
        let sharing =
            if all_marked && matches!(sharing, Sharing::MarkedGrouped | Sharing::MarkedOnly) { Sharing::Grouped } else { sharing };
        let status = status_of_marked(self.backend, sharing, all_marked);
        let update_from = || {
            format!(
                "UPDATE staged_users SET problem = c.problem, status = c.status, \
                 settled = CASE WHEN staged_users.problem = c.problem THEN staged_users.settled ELSE 0 END \
                 FROM ({status}) c WHERE staged_users.id = c.id AND (staged_users.problem <> c.problem OR staged_users.status <> c.status)"
            )
        };
        let changed = if self.backend == Backend::Postgres {
            // The new statuses that differ are read, then written by id. As
            // one `UPDATE … FROM`, PostgreSQL's generic plan once walked the
            // whole snapshot against a few marks (1.8 s for 200 rows), and
            // over every row it read the snapshot a second time to join
            // the statuses back (0.16 s at 100,000 rows) when almost none
            // differ (after a first sync's apply, none).
            let sql =
                format!("SELECT c.id, c.problem, c.status FROM ({status}) c WHERE c.problem <> c.old_problem OR c.status <> c.old_status");
            let rows = sqlx::query(&sql).bind(directory).fetch_all(&mut *tx).await?;
            let rows: Vec<(i64, String, String)> =
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect::<Result<_>>()?;
            if rows.len() > STATUS_WRITES_BY_ID {
                // Many differ (rare: a first enumeration beside as many
                // local users): one statement computes and writes them again.
                sqlx::query(&update_from()).bind(directory).execute(&mut *tx).await?;
            } else {
                const COLUMNS: [crate::Col; 3] = [crate::Col::Int("id"), crate::Col::Text("problem"), crate::Col::Text("status")];
                for chunk in rows.chunks(1000) {
                    let mut batch = crate::batch::Batch::new(self.backend, &COLUMNS, chunk.len());
                    for (id, problem, status) in chunk {
                        batch.push([crate::batch::Cell::Int(*id), crate::batch::Cell::Text(problem), crate::batch::Cell::Text(status)]);
                    }
                    let sql = format!(
                        "UPDATE staged_users SET problem = v.problem, status = v.status, \
                         settled = CASE WHEN staged_users.problem = v.problem THEN staged_users.settled ELSE 0 END \
                         FROM ({}) AS v WHERE staged_users.id = v.id",
                        batch.source()
                    );
                    batch.bind(sqlx::query(&sql))?.execute(&mut *tx).await?;
                }
            }
            !rows.is_empty()
        } else {
            sqlx::query(&update_from()).bind(directory).execute(&mut *tx).await?.rows_affected() > 0
        };
        sqlx::query("DELETE FROM staged_dirty WHERE directory = $1").bind(directory).execute(&mut *tx).await?;
        // New statuses are a new version of the snapshot (page counts by
        // status). The flag that every row counts as marked is cleared, if
        // this computation read every row for it, and no page was staged
        // since its start: a page that found the flag set wrote no marks
        // and moved the version on (`snapshot_changed`), and its rows may
        // have come after these statements read the snapshot; the flag then
        // stays for the next computation. (This write comes last, after
        // the snapshot's rows, in the order every writer takes them: on
        // PostgreSQL a page staged meanwhile waits for this row, then reads
        // the flag as committed.)
        sqlx::query(
            "INSERT INTO staging_snapshots (directory, status_at, status_users, version) VALUES ($1, $2, $6, $3) \
             ON CONFLICT (directory) DO UPDATE SET status_at = excluded.status_at, status_users = excluded.status_users, \
             version = staging_snapshots.version + $3, \
             all_marked = CASE WHEN $4 = 1 AND staging_snapshots.version = $5 THEN 0 ELSE staging_snapshots.all_marked END",
        )
        .bind(directory)
        .bind(newest)
        .bind(i64::from(changed))
        .bind(i64::from(flagged))
        .bind(version)
        .bind(users_at_newest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if many {
            // The marks just deleted are dead row versions that the next
            // computation's index scan would walk: a small table, vacuumed
            // in milliseconds.
            sqlx::query("VACUUM staged_dirty").execute(&self.pool).await?;
        }
        Ok(())
    }

    /// The marked rows whose user changes (linked by the immutable id, else
    /// by the username) are linked to it and unsettled; the users they leave
    /// are queued for the next plan's check of whether they are missing from
    /// the directory. One read finds them (each row's two lookups once, not
    /// once for each write), and the writes go by id, 500 a statement:
    /// after a first sync's apply, two statements that each looked every
    /// row's user up twice found nothing (0.74 s on PostgreSQL). Each write
    /// changes a row only when its link changes: a write is a new row
    /// version in every index on PostgreSQL. (A first enumeration beside
    /// as many users, linked by their usernames, relinks every row: by id,
    /// that is a statement per 500 rows.)
    async fn relink_marked(&self, tx: &mut crate::WriteTx, directory: &str, all_marked: bool) -> Result<()> {
        let fence = subquery_fence(self.backend);
        let found = sqlx::query(&format!(
            "SELECT x.id, x.user_id, x.uid FROM (SELECT s.id, s.user_id, \
             COALESCE((SELECT u.id FROM users u WHERE u.external_id = s.external_id), \
             (SELECT u.id FROM users u WHERE u.username_key = s.username_key)) AS uid FROM {} {fence}) x \
             WHERE x.user_id IS DISTINCT FROM x.uid",
            marked_rows(all_marked)
        ))
        .bind(directory)
        .fetch_all(&mut **tx)
        .await?;
        let relinks: Vec<(i64, Option<i64>, Option<i64>)> =
            found.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect::<Result<_>>()?;
        let left: std::collections::BTreeSet<i64> = relinks.iter().filter_map(|(_, old, _)| *old).collect();
        let left: Vec<i64> = left.into_iter().collect();
        let queue = format!(
            "INSERT INTO missing_check (directory, user_id) SELECT $1, j.id FROM ({}) j WHERE true \
             ON CONFLICT (directory, user_id) DO UPDATE SET claimed = 0",
            crate::json_ids(self.backend, 2)
        );
        for chunk in left.chunks(5000) {
            sqlx::query(&queue).bind(directory).bind(crate::to_json(chunk)?).execute(&mut **tx).await?;
        }
        for chunk in relinks.chunks(500) {
            let values = (0..chunk.len())
                .map(|i| format!("(CAST(${} AS BIGINT), CAST(${} AS BIGINT))", 2 * i + 1, 2 * i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE staged_users SET settled = 0, user_id = v.column2 FROM (VALUES {values}) AS v WHERE staged_users.id = v.column1"
            );
            let mut q = sqlx::query(&sql);
            for (id, _, uid) in chunk {
                q = q.bind(*id).bind(*uid);
            }
            q.execute(&mut **tx).await?;
        }
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
        let Counted { total, path, .. } = self.count_matching(directory, filter).await?;
        // Nothing to page through: a search that matches nothing costs one scan, not two.
        if total == 0 || offset >= total {
            return Ok((vec![], total));
        }
        let (clause, binds) = filter.clause(self.backend, path);
        // Each order has an index that yields it (`id` is the rowid that
        // ends every SQLite index), so a page never sorts the snapshot.
        let keys: &[&str] = match sort {
            "name" => &["lower(name)", "id"],
            "email" => &["lower(email)", "id"],
            "status" => &["status", "username_key", "id"],
            _ => &["username_key", "id"],
        };
        // A page past the middle is read from the far end, in the opposite
        // order (every order ends with the id, so it is exactly reversed):
        // the last page costs what the first does.
        let limit = limit.min(total - offset);
        let from_end = total - offset - limit;
        let reversed = from_end < offset;
        let (descending, offset) = if reversed { (!descending, from_end) } else { (descending, offset) };
        let dir = if descending { "DESC" } else { "ASC" };
        let order = keys.iter().map(|k| format!("{k} {dir}")).collect::<Vec<_>>().join(", ");
        let n = binds.len() + 2;
        let page = format!("FROM staged_users WHERE directory = $1{clause} ORDER BY {order} LIMIT ${n} OFFSET ${}", n + 1);
        let sql = match self.backend {
            Backend::Sqlite => format!("SELECT {STAGED_COLS} {page}"),
            // The page's ids first, then its rows: the ids of a search that
            // matches many rows come off the sort order's index alone (each
            // holds the search text, `0017_page_index_only`), where reading
            // every row passed on the way to a deep page took 110 ms.
            Backend::Postgres => format!("SELECT {STAGED_COLS} FROM staged_users WHERE id IN (SELECT id {page}) ORDER BY {order}"),
        };
        // PostgreSQL plans each page for its own search (not a prepared
        // statement's generic plan, which cannot tell a search matching
        // 40 % of the rows from one matching ten, and read "7"'s deep
        // pages through the trigram index and a sort: 80-160 ms, against
        // 15-20 ms planned for the value).
        let mut q = sqlx::query_as::<_, StagedRow>(&sql).bind(directory).persistent(self.backend == Backend::Sqlite);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let mut rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        if reversed {
            rows.reverse();
        }
        Ok((rows, total))
    }

    /// How many rows of the snapshot match `filter`, and how its pages find
    /// them: from [`PageCounts`] while the snapshot is unchanged, else
    /// counted.
    async fn count_matching(&self, directory: &str, filter: &StagedFilter<'_>) -> Result<Counted> {
        // Read before counting: a write that lands meanwhile makes the
        // count newer than its version, never older.
        let version: i64 = sqlx::query("SELECT version FROM staging_snapshots WHERE directory = $1")
            .bind(directory)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let key = (directory.to_string(), filter.status.map(str::to_string), filter.search_text().unwrap_or_default());
        if let Some(c) = self.page_counts.get(&key, version) {
            return Ok(c);
        }
        let count = |path: SearchPath| async move {
            let (clause, binds) = filter.clause(self.backend, path);
            let sql = format!("SELECT COUNT(*) FROM staged_users WHERE directory = $1{clause}");
            // Planned for its search, as the pages are (`list_staged`).
            let mut q = sqlx::query(&sql).bind(directory).persistent(self.backend == Backend::Sqlite);
            for b in &binds {
                q = q.bind(b.as_str());
            }
            Ok::<i64, crate::Error>(q.fetch_one(&self.pool).await?.try_get::<i64, _>(0)?)
        };
        let counted = if self.backend == Backend::Postgres {
            Counted { version, total: count(SearchPath::Trigrams).await?, path: SearchPath::Trigrams }
        } else if trigrams_serve(&key.2) && self.search_index_ready().await? {
            // Ask the trigram index for at most TRIGRAM_CAP rows (of any
            // directory): below it, that is the count, and the pages use it.
            let status = if filter.status.is_some() { " AND s.status = $3" } else { "" };
            let sql = format!(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN s.directory = $1{status} THEN 1 ELSE 0 END), 0) FROM \
                 (SELECT rowid FROM staged_search WHERE staged_search MATCH $2 LIMIT {TRIGRAM_CAP}) f \
                 CROSS JOIN staged_users s WHERE s.id = f.rowid"
            );
            let mut q = sqlx::query(&sql).bind(directory).bind(fts_phrase(&key.2));
            if let Some(st) = filter.status {
                q = q.bind(st);
            }
            let row = q.fetch_one(&self.pool).await?;
            let (listed, matching): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if listed < TRIGRAM_CAP {
                Counted { version, total: matching, path: SearchPath::Trigrams }
            } else {
                Counted { version, total: count(SearchPath::Scan).await?, path: SearchPath::Scan }
            }
        } else {
            Counted { version, total: count(SearchPath::Scan).await?, path: SearchPath::Scan }
        };
        self.page_counts.put(key, counted);
        Ok(counted)
    }

    /// Every staged row matching `filter` ("select all matching"), or the given ids.
    pub async fn staged_rows(&self, directory: &str, filter: &StagedFilter<'_>, ids: Option<&[i64]>) -> Result<Vec<StagedRow>> {
        let trigrams = filter.search_text().is_some_and(|q| trigrams_serve(&q));
        let path = if trigrams && !self.search_index_ready().await? { SearchPath::Scan } else { SearchPath::Trigrams };
        let (clause, binds) = filter.clause(self.backend, path);
        let mut sql = format!("SELECT {STAGED_COLS} FROM staged_users WHERE directory = $1{clause}");
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(vec![]);
            }
            // ids are integers: safe to inline.
            sql.push_str(&format!(" AND id IN ({})", ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")));
        }
        sql.push_str(" ORDER BY username_key");
        // (With ids, a text of its own each time: not kept prepared.)
        let mut q = sqlx::query_as::<_, StagedRow>(&sql).persistent(ids.is_none()).bind(directory);
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

    /// Directory users in the snapshot (the base of the mass-change threshold).
    /// Kept with the rows (`staging_snapshots.row_count`): counting them
    /// took 40 ms of a delta run on PostgreSQL at 100,000.
    pub async fn count_staged(&self, directory: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT row_count FROM staging_snapshots WHERE directory = $1").bind(directory).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// Staged rows by id.
    pub async fn staged_by_ids(&self, ids: &[i64]) -> Result<Vec<StagedRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        // ids are integers: safe to inline.
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        Ok(sqlx::query_as(&format!("SELECT {STAGED_COLS} FROM staged_users WHERE id IN ({list})"))
            .persistent(false)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Remove the snapshot's rows of these immutable ids (entries deleted in
    /// the directory, as a delta read reported them), and give the rows
    /// sharing a username or email with them a new status. Their users are
    /// then missing from the directory, as after a full enumeration.
    /// Returns how many rows left.
    pub async fn remove_staged(&self, directory: &str, external_ids: &[String]) -> Result<u64> {
        let mut gone = 0;
        let mut tx = self.write_tx().await?;
        for chunk in external_ids.chunks(500) {
            let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(",");
            let sql = format!("SELECT id FROM staged_users WHERE directory = $1 AND external_id IN ({list})");
            let mut q = sqlx::query(&sql).bind(directory);
            for id in chunk {
                q = q.bind(id);
            }
            let ids: Vec<i64> = q.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get(0)).collect::<std::result::Result<_, _>>()?;
            if ids.is_empty() {
                continue;
            }
            gone += ids.len() as u64;
            drop_staged_rows(&mut tx, directory, &ids).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// `(external_id, dn)` of every staged row of the directory: a present
    /// phase's deletions are the rows of its OU it did not list.
    pub async fn staged_ids_and_dns(&self, directory: &str) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT external_id, dn FROM staged_users WHERE directory = $1").bind(directory).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// `(external_id, dn)` of the staged rows listing any of `group_dns`
    /// among their groups (compared as DNs, case-insensitively): who was
    /// in those groups at the last read. A delta read that cannot see a
    /// removal from a group re-reads them.
    pub async fn staged_members_of(&self, directory: &str, group_dns: &[String]) -> Result<Vec<(String, String)>> {
        let wanted: std::collections::HashSet<String> = group_dns.iter().map(|g| dn_key(g)).collect();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for dn in group_dns {
            // A first cut by substring; the exact check is below.
            let pattern = crate::like_pattern(dn);
            let rows =
                sqlx::query("SELECT external_id, dn, groups FROM staged_users WHERE directory = $1 AND lower(groups) LIKE $2 ESCAPE '\\'")
                    .bind(directory)
                    .bind(&pattern)
                    .fetch_all(&self.pool)
                    .await?;
            for r in rows {
                let (uid, dn, groups): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                if groups.lines().any(|g| wanted.contains(&dn_key(g))) && seen.insert(uid.clone()) {
                    out.push((uid, dn));
                }
            }
        }
        Ok(out)
    }

    /// The staged rows of these immutable ids, as `external_id → (id,
    /// content hash, groups)`: what a delta read compares its entries with
    /// (the groups, for whether a membership changed) and stages them
    /// against ([`Store::stage_page_known`]), in one read.
    pub async fn staged_known(
        &self,
        directory: &str,
        external_ids: &[String],
    ) -> Result<std::collections::HashMap<String, (i64, i64, String)>> {
        let mut out = std::collections::HashMap::with_capacity(external_ids.len());
        for chunk in external_ids.chunks(500) {
            let list = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(",");
            let sql = format!("SELECT external_id, id, hash, groups FROM staged_users WHERE directory = $1 AND external_id IN ({list})");
            let mut q = sqlx::query(&sql).bind(directory);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
        }
        Ok(out)
    }
}

/// Delete these snapshot rows (at most a few hundred ids) and mark the rows
/// sharing a username or email with them for a new status.
async fn drop_staged_rows(tx: &mut crate::WriteTx, directory: &str, ids: &[i64]) -> Result<()> {
    // ids are integers: safe to inline.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    // One index each: an OR of the two read the whole snapshot.
    let marks = [
        format!(
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users WHERE directory = $1 AND username_key IN \
             (SELECT username_key FROM staged_users WHERE id IN ({list})) ON CONFLICT DO NOTHING"
        ),
        format!(
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users WHERE directory = $1 AND email <> '' \
             AND lower(email) IN (SELECT lower(email) FROM staged_users WHERE id IN ({list}) AND email <> '') ON CONFLICT DO NOTHING"
        ),
        // Their users may now be missing from the directory: the next plan checks.
        format!(
            "INSERT INTO missing_check (directory, user_id) SELECT directory, user_id FROM staged_users \
             WHERE id IN ({list}) AND user_id IS NOT NULL AND directory = $1 \
             ON CONFLICT (directory, user_id) DO UPDATE SET claimed = 0"
        ),
    ];
    for sql in &marks {
        sqlx::query(sql).persistent(false).bind(directory).execute(&mut **tx).await?;
    }
    let gone =
        sqlx::query(&format!("DELETE FROM staged_users WHERE id IN ({list})")).persistent(false).execute(&mut **tx).await?.rows_affected();
    snapshot_changed(tx, directory, -(gone as i64)).await?;
    sqlx::query(&format!("DELETE FROM staged_dirty WHERE directory = $1 AND id IN ({list})"))
        .persistent(false)
        .bind(directory)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A DN compared without case or spaces around its separators.
fn dn_key(dn: &str) -> String {
    dn.split(',').map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("=")).collect::<Vec<_>>().join(",").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::parse_hash_records;

    #[test]
    fn hash_records_read_back_whatever_an_immutable_id_holds() {
        // A DN-based id holds commas and digits; lengths count characters.
        let text = "7,-42,36,0f5e3c1a-0000-1000-8000-00000000000a12,9,28,dn:uid=é,ou=people,dc=x,dc=y3,0,1,,";
        let map = parse_hash_records(text).expect("well formed");
        assert_eq!(map.len(), 3);
        assert_eq!(map["0f5e3c1a-0000-1000-8000-00000000000a"], (7, -42));
        assert_eq!(map["dn:uid=é,ou=people,dc=x,dc=y"], (12, 9));
        assert_eq!(map[","], (3, 0));
        assert_eq!(parse_hash_records("").map(|m| m.len()), Some(0));
        for bad in ["7,-42,37,short", "7,x,1,a", "7,1", "7,1,2,abc"] {
            // (the last: two characters, then a record that does not parse)
            assert!(parse_hash_records(bad).is_none(), "{bad}");
        }
    }
}
