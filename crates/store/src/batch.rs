//! Rows for one bulk statement, bound the way each backend takes them
//! fastest.
//!
//! * PostgreSQL: one `jsonb` parameter, an array of arrays, read by
//!   [`crate::json_table`] (a `VALUES` list bound value by value was up to
//!   2,000 parameters to bind, send and plan per 166 rows).
//! * SQLite: a `VALUES` list of anonymous `?` parameters, one per field.
//!   SQLite finds a *named* parameter's name by a linear scan of the
//!   statement's list of names, which made binding `$1 … $11000`
//!   quadratic; anonymous parameters are not in that list, and sqlx binds
//!   them in order. Reading each field back out of a JSON text
//!   (`value->>n`, eleven a staged row) was about half of the insert: in
//!   `sqlite3`, 100,000 rows of eleven fields went in in 0.66-0.74 s from
//!   JSON and in 0.21-0.24 s from such a `VALUES` list.
//!
//! The statement's other parameters are named by [`Batch::param`] and
//! bound after the rows ([`Batch::bind`]): on SQLite they are numbered
//! after the rows' fields, which sqlx binds by the number in the name.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use crate::{Backend, Col, Result};

/// One field of a row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cell<'a> {
    Text(&'a str),
    Int(i64),
    Null,
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Text(v)
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(v: &'a String) -> Self {
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
            Cell::Int(v) => s.serialize_i64(*v),
            Cell::Null => s.serialize_none(),
        }
    }
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

    /// The rows as a subquery with the columns' names.
    pub(crate) fn source(&self) -> String {
        match self.backend {
            Backend::Postgres => crate::json_table(self.backend, 1, self.columns),
            Backend::Sqlite => {
                let fields = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, Col::Text(name) | Col::Int(name))| format!("column{} AS {name}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let row = format!("({})", vec!["?"; self.columns.len()].join(","));
                let mut sql = String::with_capacity(fields.len() + 40 + self.rows() * (row.len() + 1));
                sql.push_str("SELECT ");
                sql.push_str(&fields);
                sql.push_str(" FROM (VALUES ");
                for i in 0..self.rows() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&row);
                }
                sql.push(')');
                sql
            }
        }
    }

    /// The placeholder of the statement's `i`-th other parameter (from 1),
    /// bound after [`Batch::bind`] in that order.
    pub(crate) fn param(&self, i: usize) -> String {
        match self.backend {
            Backend::Postgres => format!("${}", i + 1),
            Backend::Sqlite => format!("${}", self.cells.len() + i),
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
                    q = match *cell {
                        Cell::Text(v) => q.bind(v),
                        Cell::Int(v) => q.bind(v),
                        Cell::Null => q.bind(None::<i64>),
                    };
                }
                Ok(q)
            }
        }
    }
}
