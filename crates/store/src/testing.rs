//! Throwaway databases for tests of this and the other crates.
//!
//! SQLite lives in a temporary directory; PostgreSQL gets a fresh database
//! (`bindery_t_<random>`) on the server named by `BINDERY_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), dropped when the
//! [`TestDb`] is dropped.

use crate::{Backend, Store};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_admin_url() -> String {
    std::env::var("BINDERY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile_dir::TempDir>,
    pg_name: Option<String>,
}

mod tempfile_dir {
    /// A directory removed on drop (kept tiny to avoid a dependency here).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("bindery_t_{}", unique_suffix()));
                std::fs::create_dir_all(&dir).expect("create temp dir");
                let url = format!("sqlite:{}", dir.join("bindery.db").display());
                let store = Store::connect(&url).await.expect("open sqlite");
                TestDb { store, url, _dir: Some(tempfile_dir::TempDir(dir)), pg_name: None }
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("bindery_t_{}", unique_suffix());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
                let url = match admin.rfind('/') {
                    Some(i) => format!("{}/{name}", &admin[..i]),
                    None => panic!("bad BINDERY_TEST_PG_URL"),
                };
                let store = Store::connect(&url).await.expect("open postgres");
                TestDb { store, url, _dir: None, pg_name: Some(name) }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop runs outside any async context we can rely on: use a
            // short-lived thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async move {
                    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok()
                })
            })
            .join();
        }
    }
}

/// SQLite: how many snapshot rows the trigram search index holds, read
/// from the index itself (an external-content index counted with
/// `COUNT(*)` counts the snapshot's rows, indexed or not): the distinct
/// row ids among its entries, listed by an `fts5vocab` table of this
/// connection's own.
pub async fn search_index_rows(store: &Store) -> i64 {
    use sqlx::Row;
    let mut conn = store.pool().acquire().await.expect("a connection");
    sqlx::query("CREATE VIRTUAL TABLE IF NOT EXISTS temp.staged_search_entries USING fts5vocab(main, 'staged_search', 'instance')")
        .execute(&mut *conn)
        .await
        .expect("the index's entries");
    sqlx::query("SELECT COUNT(DISTINCT doc) FROM temp.staged_search_entries")
        .fetch_one(&mut *conn)
        .await
        .expect("the indexed rows")
        .try_get(0)
        .expect("a count")
}
