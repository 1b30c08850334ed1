//! Rows for one bulk statement, bound the way each backend takes them
//! fastest.
//!
//! * PostgreSQL: one `jsonb` parameter, an array of arrays, read with
//!   `jsonb_array_elements` (a `VALUES` list bound value by value was up to
//!   2,000 parameters to bind, send and plan per 166 rows; in `psql`, 1,000
//!   staged rows went in in 4.3-4.9 ms from `jsonb` against 6.5-7.2 ms
//!   from a `VALUES` list of literals, and 8.3 ms from `json`, which is
//!   read again for each field).
//! * SQLite: a `VALUES` list of anonymous `?` parameters, one per field.
//!   SQLite finds a *named* parameter's name by a linear scan of the
//!   statement's list of names, which made binding `$1 … $11000`
//!   quadratic; anonymous parameters are not in that list, and sqlx binds
//!   them in order. Reading each field back out of a JSON text
//!   (`value->>n`, eleven a staged row) was about half of the insert:
//!   through Python's `sqlite3` module, 100,000 rows of eleven fields went
//!   into an unindexed table in 0.66-0.74 s from JSON and in 0.21-0.24 s
//!   from such a `VALUES` list.
//!
//! The statement's other parameters are named by [`Batch::param`] and
//! bound after the rows ([`Batch::bind`]): on SQLite they are numbered
//! after the rows' fields, which sqlx binds by the number in the name.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use crate::{Backend, Col, Result};

/// One field of a row.
#[derive(Clone, Debug)]
pub(crate) enum Cell<'a> {
    Text(&'a str),
    /// A text made for the row (a staged row's search text): the batch
    /// owns it, so that it can be built and bound before the statement's
    /// transaction starts.
    Owned(String),
    Int(i64),
    Null,
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Text(v)
    }
}

impl From<i64> for Cell<'_> {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}

impl<'a, T: Into<Cell<'a>>> From<Option<T>> for Cell<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

impl serde::Serialize for Cell<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Cell::Text(v) => s.serialize_str(v),
            Cell::Owned(v) => s.serialize_str(v),
            Cell::Int(v) => s.serialize_i64(*v),
            Cell::Null => s.serialize_none(),
        }
    }
}

/// A statement with its values bound.
pub(crate) type BoundQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// A statement's SQL and its rows, made before the write transaction that
/// runs it (`staging::RowWrites`, `identity::AccountWrites`): bound outside
/// it too, so that the transaction, which on SQLite holds the process's
/// one write turn, only waits for the database.
pub(crate) struct Statement<'a> {
    pub(crate) sql: String,
    pub(crate) batch: Batch<'a>,
}

/// Statements made before their transaction (`writes`, a
/// `staging::RowWrites` or `identity::AccountWrites`), with their values
/// bound, in the order its `run` runs them: made by its `bound()` outside
/// the transaction, run inside it by `run`, so the two cannot be paired
/// wrongly.
pub(crate) struct Bound<'w, W> {
    pub(crate) writes: &'w W,
    pub(crate) queries: Vec<BoundQuery<'w>>,
}

/// Rows of `columns.len()` fields each, for one statement.
pub(crate) struct Batch<'a> {
    backend: Backend,
    columns: &'a [Col],
    cells: Vec<Cell<'a>>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(backend: Backend, columns: &'a [Col], rows: usize) -> Batch<'a> {
        Batch { backend, columns, cells: Vec::with_capacity(rows * columns.len()) }
    }

    /// Add a row: its fields, in the order of the columns.
    pub(crate) fn push<const N: usize>(&mut self, row: [Cell<'a>; N]) {
        debug_assert_eq!(N, self.columns.len(), "a row has a field for each column");
        self.cells.extend(row);
    }

    pub(crate) fn rows(&self) -> usize {
        self.cells.len() / self.columns.len().max(1)
    }

    /// SQLite: the rows the statement is written for, its rows rounded up
    /// to a power of two (at least 16); those it does not have are bound
    /// as NULL and left out by the statement ([`Batch::source`]). sqlx
    /// keeps each statement text's prepared statement, up to 100 a
    /// connection, and one of 1,000 rows of thirteen fields holds 1.3 MB
    /// (`sqlite3`'s statement heap) and took 4.4 ms to run prepared anew
    /// against 0.8 ms from the cache (Python's `sqlite3`). With a text for
    /// each number of rows, pages of varying sizes (a first sync's users:
    /// as many as each page had clean entries) each added a text of their
    /// own, kept until a hundred others pushed it out. Rounded, a
    /// statement of up to 1,000 rows has seven texts.
    fn slots(&self) -> usize {
        self.rows().next_power_of_two().max(16)
    }

    /// SQLite: how many NULL fields the rows beyond the batch's take
    /// ([`Batch::slots`]).
    fn padding(&self) -> usize {
        (self.slots() - self.rows()) * self.columns.len()
    }

    /// The rows as a subquery with the columns' names.
    pub(crate) fn source(&self) -> String {
        match self.backend {
            Backend::Postgres => {
                let fields = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c {
                        Col::Text(name) => format!("value->>{i} AS {name}"),
                        Col::Int(name) => format!("CAST(value->>{i} AS BIGINT) AS {name}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("SELECT {fields} FROM jsonb_array_elements(CAST($1 AS jsonb)) AS j(value)")
            }
            Backend::Sqlite => {
                let fields = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, Col::Text(name) | Col::Int(name))| format!("column{} AS {name}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let row = format!("({})", vec!["?"; self.columns.len()].join(","));
                let mut sql = String::with_capacity(fields.len() + 70 + self.slots() * (row.len() + 1));
                sql.push_str("SELECT ");
                sql.push_str(&fields);
                sql.push_str(" FROM (VALUES ");
                for i in 0..self.slots() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&row);
                }
                // The padding's rows ([`Batch::slots`]): every batch's
                // first column is a key, never NULL in a row of its own.
                sql.push_str(") WHERE column1 IS NOT NULL");
                sql
            }
        }
    }

    /// The placeholder of the statement's `i`-th other parameter (from 1),
    /// bound after [`Batch::bind`] in that order.
    pub(crate) fn param(&self, i: usize) -> String {
        match self.backend {
            Backend::Postgres => format!("${}", i + 1),
            Backend::Sqlite => format!("${}", self.slots() * self.columns.len() + i),
        }
    }

    /// Bind the rows: the first parameters of `q`.
    pub(crate) fn bind<'q>(&'q self, mut q: Query<'q, Any, AnyArguments<'q>>) -> Result<Query<'q, Any, AnyArguments<'q>>> {
        match self.backend {
            Backend::Postgres => {
                let rows: Vec<&[Cell<'_>]> = self.cells.chunks(self.columns.len().max(1)).collect();
                Ok(q.bind(crate::to_json(&rows)?))
            }
            Backend::Sqlite => {
                for cell in &self.cells {
                    q = match cell {
                        Cell::Text(v) => q.bind(*v),
                        Cell::Owned(v) => q.bind(v.as_str()),
                        Cell::Int(v) => q.bind(*v),
                        Cell::Null => q.bind(None::<i64>),
                    };
                }
                Ok((0..self.padding()).fold(q, |q, _| q.bind(None::<i64>)))
            }
        }
    }
}

/// The end of a bulk insert into `table` (with `id` and `external_id`
/// columns), for [`inserted_keys`]: the new rows' keys come back with the
/// insert. PostgreSQL: `RETURNING`. SQLite: a second statement in the
/// same call reads them back as one JSON text, with their count.
///
/// SQLite's driver hands a statement's rows over from its worker thread
/// one by one, through a channel of 50: the 2,000 rows a first sync's page
/// of 1,000 entries returned (users and snapshot rows) were about 40
/// waits for the other thread, inside the write turn. The rows read back
/// are the last `changes()` ids up to `last_insert_rowid()`, the insert's
/// own: under the write lock one statement's new rows have consecutive
/// ids (SQLite gives a new row the largest id plus one; only a table whose
/// ids reached the largest integer gets random ones, and then the count
/// tells). One call, not three (the largest id before, the insert, the
/// read): each hop to the worker thread and back cost 0.1-0.45 ms of a
/// first sync's page turn.
pub(crate) fn returning_keys(backend: Backend, table: &str) -> String {
    match backend {
        Backend::Postgres => " RETURNING id, external_id".to_string(),
        Backend::Sqlite => format!(
            "; SELECT COALESCE(json_group_array(json_array(id, external_id)), '[]'), changes() FROM {table} \
             WHERE id > last_insert_rowid() - changes() AND id <= last_insert_rowid()"
        ),
    }
}

/// Run `insert` (ending with [`returning_keys`] of `table`) inside the
/// caller's write transaction, and return the `(id, external_id)` of each
/// row it added, in no particular order.
pub(crate) async fn inserted_keys<'q>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    table: &str,
    insert: Query<'q, Any, AnyArguments<'q>>,
) -> Result<Vec<(i64, String)>> {
    use sqlx::Row;
    // (`fetch_all` keeps the rows only: on SQLite the read's, not the
    // insert's result.)
    let rows = insert.fetch_all(&mut *conn).await?;
    match backend {
        Backend::Postgres => rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect(),
        Backend::Sqlite => {
            let row = rows.first().ok_or(crate::Error::Database(sqlx::Error::RowNotFound))?;
            let (text, added): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            let keys: Vec<(i64, String)> =
                serde_json::from_str(&text).map_err(|e| crate::Error::Database(sqlx::Error::Decode(Box::new(e))))?;
            if keys.len() as i64 != added {
                return Err(crate::Error::Database(sqlx::Error::Protocol(format!(
                    "{table}: {added} rows inserted but {} found among the last {added} ids (the table's ids are exhausted)",
                    keys.len()
                ))));
            }
            Ok(keys)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Col::{Int, Text};

    // A SQLite batch is written for its rows rounded up to a power of two,
    // the rest bound as NULL and left out; its other parameters come after.
    #[test]
    fn a_sqlite_batch_is_padded_to_a_power_of_two() {
        const COLUMNS: [crate::Col; 2] = [Int("id"), Text("name")];
        let mut batch = Batch::new(Backend::Sqlite, &COLUMNS, 17);
        for i in 0..17 {
            batch.push([Cell::Int(i), Cell::Text("x")]);
        }
        let source = batch.source();
        assert_eq!(source.matches('?').count(), 64, "32 rows of 2");
        assert!(source.ends_with(") WHERE column1 IS NOT NULL"), "{source}");
        assert_eq!(batch.param(1), "$65");
        assert_eq!(Batch::new(Backend::Sqlite, &COLUMNS, 0).source().matches('?').count(), 32, "at least 16 rows");
    }
}
