//! A first sync's pages. When a directory has no snapshot row and no
//! Bindery user of its own yet, the service plans each page of the
//! enumeration as it arrives (the one identity rule, over entries no user
//! holds) and the store writes the page in one transaction: the rows
//! staged, the users their clean entries create with their memberships,
//! those rows linked and settled under the plan's rules, and the items
//! recorded as applied. The directory is read on meanwhile. Before, a first
//! sync staged every row, then read them all back to plan, wrote the plan
//! as items, read the items back to apply them, and wrote every row a
//! second time to settle it.
//!
//! What a page did not create is left unsettled for the plan that follows
//! the enumeration. Whether an entry shares its username or email with
//! another is known only once every entry is staged: the users a page
//! created for rows the status computation then finds such a problem
//! with are taken back ([`Store::undo_first_load`]), as are all of a
//! cancelled run's.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use sqlx::Row;

use crate::{Backend, NewAccount, NewItem, NewStaged, Result, StagedPage, Store};

/// A hasher for keys that are 64-bit hashes or row ids already: one
/// folded multiply (the product's two halves, exclusive-or'ed), so that
/// every bit of the key reaches the bits a table picks buckets by. In a
/// first sync's profile, SipHash over the pages' sets of such keys was
/// 2 % of the CPU time of the run's two cores.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not the keys it is made for; correct for any key all the same.
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

/// The [`KeyHasher`] of a map or set.
pub type KeyHashing = BuildHasherDefault<KeyHasher>;

/// A staged row's username key and (non-empty, lowercased) email, each as
/// its 64-bit hash ([`crate::stable_hash`]): what a first load keeps of
/// them ([`LoadedValues`]).
#[derive(Clone, Copy, Debug)]
pub struct ValueHashes {
    name: u64,
    email: Option<u64>,
}

impl ValueHashes {
    pub fn of(row: &NewStaged<'_>) -> ValueHashes {
        ValueHashes { name: value_hash(row.username_key), email: email_hash(row.email) }
    }
}

/// A username key's or lowercased email's 64-bit hash.
fn value_hash(text: &str) -> u64 {
    crate::stable_hash(&[text]) as u64
}

/// An email's hash, lowercased; `None` for no email.
fn email_hash(email: &str) -> Option<u64> {
    (!email.is_empty()).then(|| value_hash(&email.to_lowercase()))
}

/// Whether `value` is new to `map`, which then holds it (with no row yet).
fn first_in(map: &mut HashMap<u64, i64, KeyHashing>, value: u64) -> bool {
    match map.entry(value) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(0);
            true
        }
        std::collections::hash_map::Entry::Occupied(_) => false,
    }
}

/// What a first load's pages saw of each entry's username key and email,
/// kept by the service across the pages: 8 bytes of hash and the row's id
/// a value, not the texts (the strings were 20 MB of a first sync's 45 MB
/// at 100,000 users). Two texts that share a hash count as one value: the
/// same text always has the same hash.
///
/// * As each page is planned ([`LoadedValues::first_seen`]): whether its
///   entry is the first with its username and its email, the only one a
///   page may create a user for.
/// * Once each page is written ([`LoadedValues::written`]): the row that
///   holds each value first, and every row whose value another row holds
///   too.
///
/// Once every entry is staged, the rows sharing a value are known without
/// reading the snapshot, whose indexes of usernames and emails a bulk load
/// builds only after the run ([`Store::mark_first_load`]).
#[derive(Default)]
pub struct LoadedValues {
    /// Hash → the id of the row that holds it (0: planned, not written yet).
    names: HashMap<u64, i64, KeyHashing>,
    emails: HashMap<u64, i64, KeyHashing>,
    /// Rows that share a value with another row (each may come more than once).
    shared: Vec<i64>,
}

impl LoadedValues {
    /// As a page is planned: whether the entry is the first with its
    /// username, and with its email (an entry with none counts as first).
    pub fn first_seen(&mut self, h: ValueHashes) -> (bool, bool) {
        (first_in(&mut self.names, h.name), h.email.is_none_or(|e| first_in(&mut self.emails, e)))
    }

    /// Once a page is written: its rows (`rows`, with their `hashes`, in
    /// the same order) that it inserted (`new_rows`, as the store returned
    /// them). A row listed again (search OUs that overlap) is the row an
    /// earlier page inserted, with the values it had then.
    pub fn written(&mut self, rows: &[NewStaged<'_>], hashes: &[ValueHashes], new_rows: &[(String, i64)]) {
        let ids: HashMap<&str, i64> = new_rows.iter().map(|(e, id)| (e.as_str(), *id)).collect();
        for (r, h) in rows.iter().zip(hashes) {
            let Some(&id) = ids.get(r.external_id) else { continue };
            for (map, value) in [(&mut self.names, Some(h.name)), (&mut self.emails, h.email)] {
                let Some(value) = value else { continue };
                let holder = map.entry(value).or_insert(0);
                if *holder == 0 {
                    *holder = id;
                } else if *holder != id {
                    self.shared.push(*holder);
                    self.shared.push(id);
                }
            }
        }
    }

    /// The rows that hold a username key or email (lowercased) as their
    /// first: with any others that hold it, in [`LoadedValues::shared`].
    fn holders(&self, username_key: &str, email: &str) -> impl Iterator<Item = i64> + '_ {
        let name = self.names.get(&value_hash(username_key)).copied();
        let email = email_hash(email).and_then(|e| self.emails.get(&e).copied());
        name.into_iter().chain(email).filter(|id| *id != 0)
    }
}

/// PostgreSQL: up to this many users other than a first load's own are
/// looked up in the snapshot one by one ([`Store::mark_first_load`]).
const OTHERS_LOOKED_UP: i64 = 5_000;

/// The users that are not a first load's own untouched ones
/// ([`Store::mark_first_load`]), `source` being the placeholder of the
/// directory's source: another source's, or changed since created.
fn not_the_loads_own(source: &str) -> String {
    format!("(source <> {source} OR updated_at <> created_at)")
}

/// The end of [`Store::mark_first_load`]: every row counts as marked no
/// more, and the watermark is the newest user change now, with how many
/// users have its time (`Store::compute_staged_status`).
async fn set_status_watermark(tx: &mut crate::WriteTx, directory: &str) -> Result<()> {
    sqlx::query(
        "UPDATE staging_snapshots SET all_marked = 0, version = version + 1, \
         status_at = (SELECT COALESCE(MAX(updated_at), 0) FROM users), \
         status_users = (SELECT COUNT(*) FROM users WHERE updated_at = (SELECT MAX(updated_at) FROM users)) \
         WHERE directory = $1",
    )
    .bind(directory)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Whether a sync of `directory` may load its pages (see the module):
    /// its snapshot has no row and no user has its source (`source`).
    pub async fn first_load_possible(&self, directory: &str, source: &str) -> Result<bool> {
        let any: i64 = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM staged_users WHERE directory = $1) THEN 1 \
             WHEN EXISTS (SELECT 1 FROM users WHERE source = $2) THEN 1 ELSE 0 END",
        )
        .bind(directory)
        .bind(source)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(any == 0)
    }

    /// Which of these username keys a Bindery user has.
    pub async fn taken_username_keys(&self, keys: &[&str]) -> Result<HashSet<String>> {
        // Each key looked up by the unique index: PostgreSQL joined the
        // list with every user (a hash join over a growing table, planned
        // from the statistics of the load's start).
        let list = match self.backend {
            Backend::Sqlite => "SELECT value AS k FROM json_each($1)",
            Backend::Postgres => "SELECT json_array_elements_text($1::json) AS k",
        };
        let rows = sqlx::query(&format!("SELECT l.k FROM ({list}) l WHERE (SELECT 1 FROM users u WHERE u.username_key = l.k) IS NOT NULL"))
            .bind(crate::to_json(keys)?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    /// Stage a page of a first load against `known` (as
    /// [`Store::stage_page_known`] does) and, in the same transaction,
    /// create `creates`' users (each for the entry of its `external_id`),
    /// link and settle their rows under `rules`, and record their items
    /// as applied. Each create's entry must be new to the snapshot (the
    /// service creates a username once per run, so an entry that search OUs
    /// that overlap list twice is created once).
    #[allow(clippy::too_many_arguments)]
    pub async fn load_page(
        &self,
        directory: &str,
        rows: &[NewStaged<'_>],
        known: &HashMap<String, (i64, i64)>,
        run: i64,
        rules: &str,
        creates: Vec<(&NewAccount, NewItem<'_>)>,
        now: i64,
    ) -> Result<StagedPage> {
        let rows = crate::staging::once_with_hashes(rows);
        let mut out = StagedPage { ids: Vec::with_capacity(rows.len()), ..Default::default() };
        // The users and the rows are made into statements and bound before
        // the write turn is taken (`staging::RowWrites`).
        let accounts: Vec<&NewAccount> = creates.iter().map(|(a, _)| *a).collect();
        let users = crate::identity::AccountWrites::new(self.backend, &accounts, now);
        let users_bound = users.bound()?;
        let writes = self.row_writes(directory, rows, known, Some(rules), true);
        let bound = writes.bound()?;
        let mut tx = self.page_tx().await?;
        // The users first: each row is then inserted linked to its user
        // and settled, one write of it (`staging::linked_insert`).
        users_bound.run(&mut tx).await?;
        let written = bound.run(&mut tx, &mut out).await?;
        let inserted: HashMap<&str, i64> = out.new_rows.iter().map(|(e, id)| (e.as_str(), *id)).collect();
        let items: Vec<NewItem<'_>> = creates
            .into_iter()
            .map(|(account, mut item)| {
                item.staged_id = inserted.get(account.external_id.as_str()).copied();
                item
            })
            .collect();
        crate::runs::insert_items_in(&mut tx, self.backend, run, &items).await?;
        crate::staging::note_written(&mut tx, self.backend, directory, out.inserted, &written).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// After a first load's complete enumeration, before its status
    /// computation: instead of every row counting as marked (the flag a
    /// first enumeration sets, [`Store::begin_staging`]), only the rows
    /// whose status the pages could not know are marked:
    ///
    /// * rows with no user (an entry the pages did not create: a problem,
    ///   a username another user has, one a page saw before);
    /// * rows linked to, or with the username, immutable id or email of, a
    ///   user that is not one the load created and nobody changed since
    ///   (`source` is the directory's; the load began with no user of it,
    ///   [`Store::first_load_possible`]): a local user, another
    ///   directory's, or one of the load's that an administrator edited
    ///   meanwhile (its `updated_at` moved on from its `created_at`).
    ///
    /// Rows that share a username or an email with another row need no
    /// mark of their own: a page creates a user for the first entry with
    /// a username or email only, so each such group has a row with no user,
    /// and the computation marks the rows that share a value with a marked
    /// one.
    ///
    /// Every other row was inserted linked to the user its page created for
    /// it, with the status that user gives it (`staging::linked_insert`),
    /// and nothing else can give it a problem. The users' watermark moves
    /// to now: the load's users count as seen, and the marks above cover
    /// every other user. A first sync at 100,000 users then computes the
    /// status of a few rows, where it read every row and every row's user
    /// (0.25 s on SQLite, 0.5 s on PostgreSQL, with nothing to change).
    ///
    /// With `values`, what the load's pages saw (SQLite): the rows that
    /// share a username or email with another row, and those with the
    /// username or email of another user, are marked from them, by id.
    /// Without an index of usernames and emails until the run's end
    /// (`bulk.rs`), each of those marks read the whole snapshot, as did
    /// the status computation's search for the marked rows' neighbours and
    /// its grouping of their values: 0.13 s of a first sync at 100,000
    /// users, for one row with no user and one local user. Every row that
    /// shares a value with another is then marked, which the computation
    /// that follows is told ([`Store::compute_staged_status_closed`]).
    /// Returns whether it was. (PostgreSQL's `lower` may fold more than
    /// Rust's lowercasing, SQLite's folds only ASCII letters: the hashes
    /// of SQLite's equal emails are equal, and only there are they used.)
    pub async fn mark_first_load(&self, directory: &str, source: &str, values: Option<&LoadedValues>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // The rows with no user, by the index of the user link.
        sqlx::query(
            "INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM staged_users \
             WHERE directory = $1 AND user_id IS NULL ON CONFLICT DO NOTHING",
        )
        .bind(directory)
        .execute(&mut *tx)
        .await?;
        if let Some(values) = values.filter(|_| self.backend == Backend::Sqlite) {
            let others: Vec<(i64, String, Option<String>, String)> =
                sqlx::query_as(&format!("SELECT id, username_key, external_id, email FROM users WHERE {}", not_the_loads_own("$1")))
                    .bind(source)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut ids: Vec<i64> = values.shared.clone();
            for (_, username_key, _, email) in &others {
                ids.extend(values.holders(username_key, email));
            }
            ids.sort_unstable();
            ids.dedup();
            let user_ids: Vec<i64> = others.iter().map(|o| o.0).collect();
            let external_ids: Vec<&str> = others.iter().filter_map(|o| o.2.as_deref()).collect();
            // The rows by id, those linked to another user, and those with
            // another user's immutable id: each looked up by its index, the
            // list first (`CROSS JOIN`: SQLite otherwise walked the
            // directory's rows for the ids, 5 ms at 100,000).
            let by = |column: &str| {
                format!("SELECT s.directory, s.id FROM json_each($2) j CROSS JOIN staged_users s WHERE s.directory = $1 AND s.{column} = j.value")
            };
            for (sql, json) in [
                (by("id"), crate::to_json(&ids)?),
                (by("user_id"), crate::to_json(&user_ids)?),
                (by("external_id"), crate::to_json(&external_ids)?),
            ] {
                sqlx::query(&format!("INSERT INTO staged_dirty (directory, id) {sql} ON CONFLICT DO NOTHING"))
                    .bind(directory)
                    .bind(json)
                    .execute(&mut *tx)
                    .await?;
            }
            set_status_watermark(&mut tx, directory).await?;
            tx.commit().await?;
            return Ok(true);
        }
        if self.backend == Backend::Postgres {
            // PostgreSQL cannot estimate the other users' condition: it took
            // them for all of the users and hashed the whole snapshot four
            // times (0.1 s at 100,000 rows, for a handful of users). When
            // they are few, each is looked up by the snapshot's indexes,
            // unless the indexes of usernames and emails are still to be
            // built after the run (`bulk.rs`): then each lookup would be a
            // scan of the snapshot.
            let row = sqlx::query(&format!(
                "SELECT (SELECT COUNT(*) FROM users WHERE {}), {}",
                not_the_loads_own("$1"),
                crate::bulk::LOAD_PENDING
            ))
            .bind(source)
            .fetch_one(&mut *tx)
            .await?;
            let (others, pending): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            if others <= OTHERS_LOOKED_UP && pending == 0 {
                sqlx::query("SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // The other users are read once (a scan of the users), then each
        // is looked up in the snapshot by its index. The usernames and
        // emails as lists (`IN`): while a bulk load has their indexes still
        // to build, each list is matched in one read of the snapshot, not
        // in one read for each other user.
        sqlx::query(&format!(
            "WITH o AS MATERIALIZED (SELECT id, username_key, external_id, email FROM users WHERE {}) \
             INSERT INTO staged_dirty (directory, id) SELECT directory, id FROM (\
             SELECT s.directory, s.id FROM o CROSS JOIN staged_users s WHERE s.directory = $1 AND s.user_id = o.id \
             UNION SELECT s.directory, s.id FROM staged_users s WHERE s.directory = $1 AND s.username_key IN (SELECT username_key FROM o) \
             UNION SELECT s.directory, s.id FROM o CROSS JOIN staged_users s \
               WHERE o.external_id IS NOT NULL AND s.directory = $1 AND s.external_id = o.external_id \
             UNION SELECT s.directory, s.id FROM staged_users s \
               WHERE s.directory = $1 AND s.email <> '' AND lower(s.email) IN (SELECT lower(email) FROM o WHERE email <> '')) m WHERE true \
             ON CONFLICT DO NOTHING",
            not_the_loads_own("$2")
        ))
        .bind(directory)
        .bind(source)
        .execute(&mut *tx)
        .await?;
        set_status_watermark(&mut tx, directory).await?;
        tx.commit().await?;
        Ok(false)
    }

    /// Take back users a first load (`run`) created: those whose rows the
    /// status computation found a problem with since (a username or an
    /// email another entry shares, an email another Bindery user has),
    /// which a plan over the whole snapshot would not have created, or
    /// with `all` (a cancelled run, which applies nothing) every one. The
    /// users are deleted (they are the run's own, seconds old; any session
    /// goes with them), their items removed, and their rows unlinked,
    /// unsettled and marked for a new status, as if the page had only
    /// staged them. Returns how many.
    pub async fn undo_first_load(&self, directory: &str, run: i64, all: bool) -> Result<u64> {
        // A created row has no problem of its own (a page creates clean
        // entries only), so one found since differs from its entry's:
        // the partial index of such rows tells at once when there is none,
        // the usual case, without reading the run's items (37 ms at
        // 100,000 on SQLite). The rows with a user are not asked for here
        // (SQLite then took the index of the linked rows and read every
        // one, 18 ms): any row with such a problem sends it to the full
        // read below. (PostgreSQL cannot estimate `problem <> entry_problem`,
        // takes it for nearly every row and scans the table for the first
        // one instead: 9 ms at 100,000 rows, still less than the read of
        // the items.)
        if !all {
            let any: i64 = sqlx::query(&format!(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM staged_users WHERE directory = $1 AND problem <> entry_problem \
                 AND problem <> '' AND NOT {}) THEN 1 ELSE 0 END",
                crate::staging::is_conflict("problem")
            ))
            .bind(directory)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
            if any == 0 {
                return Ok(0);
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT i.id, s.id, s.user_id FROM sync_items i JOIN staged_users s ON s.id = i.staged_id \
             WHERE i.run_id = $1 AND i.action = 'create' AND i.outcome = 'applied' AND s.directory = $2 AND s.user_id IS NOT NULL \
             AND ($3 = 1 OR (s.problem <> '' AND NOT {}))",
            crate::staging::is_conflict("s.problem")
        ))
        .bind(run)
        .bind(directory)
        .bind(i64::from(all))
        .fetch_all(&self.pool)
        .await?;
        let mut undo = Vec::with_capacity(rows.len());
        for r in &rows {
            undo.push((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?));
        }
        for chunk in undo.chunks(5000) {
            let items: Vec<i64> = chunk.iter().map(|u| u.0).collect();
            let staged: Vec<i64> = chunk.iter().map(|u| u.1).collect();
            let users: Vec<i64> = chunk.iter().map(|u| u.2).collect();
            let ids = crate::json_ids(self.backend, 1);
            let mut tx = self.write_tx().await?;
            sqlx::query(&format!("DELETE FROM sync_items WHERE id IN ({ids})")).bind(crate::to_json(&items)?).execute(&mut *tx).await?;
            sqlx::query(&format!("DELETE FROM users WHERE id IN ({ids})")).bind(crate::to_json(&users)?).execute(&mut *tx).await?;
            sqlx::query(&format!("UPDATE staged_users SET user_id = NULL, settled = 0, plan_key = NULL WHERE id IN ({ids})"))
                .bind(crate::to_json(&staged)?)
                .execute(&mut *tx)
                .await?;
            crate::staging::note_written(&mut tx, self.backend, directory, 0, &staged).await?;
            tx.commit().await?;
        }
        Ok(undo.len() as u64)
    }

    /// After a first load's pages and [`Store::undo_first_load`], before
    /// the plan: the run's items so far are the pages' own, each written
    /// applied, so the run's `applied_through` moves past them and the
    /// apply's reads of planned items start after them instead of
    /// stepping over 100,000 applied ones (12.5 ms on SQLite). Every item
    /// up to there reads as it is (the mark only turns a `planned` one
    /// into `applied`, and there is none).
    pub async fn pass_first_load_items(&self, run: i64) -> Result<()> {
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM sync_items WHERE run_id = $1")
            .bind(run)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let mut tx = self.write_tx().await?;
        crate::runs::items_applied(&mut tx, run, last).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash, Hasher};

    use super::{KeyHasher, KeyHashing};

    fn hash<T: Hash>(key: T) -> u64 {
        KeyHashing::default().hash_one(key)
    }

    // Keys that are ids one after another, or hashes, spread over the bits a
    // table picks buckets by (the low ones) and its tag bits (the high
    // ones); bytes (a key of another kind) each change the hash.
    #[test]
    fn the_key_hasher_spreads_ids_and_counts_every_byte() {
        let ids: std::collections::HashSet<u64> = (1..=4096_i64).map(|id| hash(id) & 0xfff).collect();
        assert!(ids.len() > 2400, "low bits of 4,096 consecutive ids: {} distinct", ids.len());
        let tags: std::collections::HashSet<u64> = (1..=4096_i64).map(|id| hash(id) >> 57).collect();
        assert_eq!(tags.len(), 128, "every 7-bit tag is used");
        let mut a = KeyHasher::default();
        a.write(b"ab");
        let mut b = KeyHasher::default();
        b.write(b"bb");
        let mut c = KeyHasher::default();
        c.write(b"ba");
        assert!(a.finish() != b.finish() && a.finish() != c.finish() && b.finish() != c.finish());
    }
}
