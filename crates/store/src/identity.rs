//! Typed identity changes and how they are stored.
//!
//! The service's one reconciliation rule decides what a directory entry
//! means for a Bindery user and returns a [`Change`]; every path (first
//! sign-in, re-validation, import, sync) hands that change to the store,
//! which applies it here and nowhere else. Sync records its planned changes
//! as JSON (`sync_items.change_json`) so an approved plan is applied exactly
//! as it was shown.

use bindery_model::{Role, UserSource};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::{b, unique, Backend, MembershipRow, Result, Store};

/// Where an organisation membership came from. A group mapping that no
/// longer applies takes back only the memberships it gave (`Mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgSource {
    /// Given by the directory's group mapping.
    Mapping,
    /// Chosen at import, or in the sync settings.
    Selection,
    /// The default organisation of a user created without a choice.
    Default,
    /// Given by an administrator (and every membership older than sources).
    Manual,
}

impl OrgSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgSource::Mapping => "mapping",
            OrgSource::Selection => "selection",
            OrgSource::Default => "default",
            OrgSource::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> OrgSource {
        match s {
            "mapping" => OrgSource::Mapping,
            "selection" => OrgSource::Selection,
            "default" => OrgSource::Default,
            _ => OrgSource::Manual,
        }
    }
}

/// A Bindery user to create for a directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub username: String,
    pub username_key: String,
    pub name: String,
    pub email: String,
    pub external_id: String,
    pub source: UserSource,
    pub role: Role,
    pub active: bool,
    pub organisations: Vec<(i64, OrgSource)>,
}

/// Enabling or disabling because of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Disabled in, or missing from, the directory: disabled here, every
    /// session ends and every token is revoked.
    Disable,
    /// Active in the directory again, and it was the directory that
    /// disabled the user.
    Enable,
}

/// What changes for an existing user. `None` / empty: unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub user_id: i64,
    /// The username the user has now (for logs and reports).
    pub username: String,
    /// Renamed in the directory: (new username, its key).
    #[serde(default)]
    pub rename: Option<(String, String)>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Linked to the entry's immutable id (first match, or a changed link).
    #[serde(default)]
    pub external_id: Option<String>,
    /// (before, after): the group mapping changed the role.
    #[serde(default)]
    pub role: Option<(Role, Role)>,
    #[serde(default)]
    pub add_organisations: Vec<(i64, OrgSource)>,
    /// Memberships the mapping gave and no longer gives.
    #[serde(default)]
    pub remove_organisations: Vec<i64>,
    #[serde(default)]
    pub activation: Option<Activation>,
}

impl Update {
    pub fn new(user_id: i64, username: &str) -> Update {
        Update { user_id, username: username.to_string(), ..Default::default() }
    }

    /// Whether anything other than the account's activation changes.
    pub fn changes_attributes(&self) -> bool {
        self.rename.is_some()
            || self.name.is_some()
            || self.email.is_some()
            || self.external_id.is_some()
            || self.role.is_some()
            || !self.add_organisations.is_empty()
            || !self.remove_organisations.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.changes_attributes() && self.activation.is_none()
    }
}

/// What one directory entry (or its absence) means for Bindery: exactly
/// one of these, each with its reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Nothing to do.
    Nothing { reason: String },
    /// A new Bindery user.
    Create { account: NewAccount, reason: String },
    /// The linked user changes (attributes, role, organisations, activation).
    Update { update: Update, reasons: Vec<String> },
    /// The username belongs to a Bindery user linked to another directory
    /// entry: nothing changes for either, an administrator decides.
    Conflict { user_id: i64, reason: String },
    /// The entry cannot become (or stay) a Bindery user: a bad entry, a
    /// local user's name, not imported under "only imported users".
    Refuse { reason: String },
}

impl Change {
    /// The reason in words.
    pub fn reason(&self) -> String {
        match self {
            Change::Nothing { reason } | Change::Create { reason, .. } | Change::Conflict { reason, .. } | Change::Refuse { reason } => {
                reason.clone()
            }
            Change::Update { reasons, .. } => reasons.join("; "),
        }
    }
}

/// What applying an update ended: sessions and tokens (when it disabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub sessions_ended: u64,
    pub tokens_revoked: u64,
}

impl Store {
    /// Create a directory user; returns its id.
    pub async fn create_account(&self, a: &NewAccount, now: i64) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let id = create(&mut tx, a, now).await?;
        crate::sync::user_changed(&mut tx, id).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Apply one update in one transaction.
    pub async fn apply_update(&self, u: &Update, now: i64) -> Result<Applied> {
        let mut tx = self.write_tx().await?;
        let done = update_many(&mut tx, self.backend, &[u], now).await?;
        crate::sync::user_changed(&mut tx, u.user_id).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Apply a batch of changes in one transaction: updates first (a rename
    /// may free a name a new user takes), then the new users a few rows per
    /// statement. Conflicts, refusals and nothing change nothing.
    /// `applied`: the run and its last item these changes are (see
    /// `runs::items_applied`).
    pub async fn apply_changes(
        &self,
        changes: &[&Change],
        settle: Option<(&str, &[i64])>,
        applied: Option<(i64, i64)>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for c in changes {
            match c {
                Change::Update { update: u, .. } => updates.push(u),
                Change::Create { account, .. } => creates.push(account),
                Change::Nothing { .. } | Change::Conflict { .. } | Change::Refuse { .. } => {}
            }
        }
        update_many(&mut tx, self.backend, &updates, now).await?;
        create_accounts(&mut tx, self.backend, &creates, now).await?;
        let updated: Vec<i64> = updates.iter().map(|u| u.user_id).collect();
        // Before the settle below: it settles what this applied.
        crate::sync::users_changed(&mut tx, &updated).await?;
        if let Some((rules, staged_ids)) = settle {
            crate::sync::settle_applied(&mut tx, self.backend, rules, staged_ids).await?;
        }
        // The run's items say so in the same transaction: applied, and
        // recorded as applied, or neither.
        if let Some((run, through)) = applied {
            crate::runs::items_applied(&mut tx, run, through).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Link a user to another directory entry (an administrator's decision
    /// on a username conflict): every session ends and every token is
    /// revoked, since the person behind the account may have changed.
    pub async fn relink_account(&self, user_id: i64, external_id: &str, now: i64) -> Result<Applied> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET external_id = $1, updated_at = $2, validated_at = NULL WHERE id = $3")
            .bind(external_id)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(unique("user"))?;
        crate::sync::user_changed(&mut tx, user_id).await?;
        let done = end_credentials(&mut tx, user_id, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Pin or unpin a user's role.
    pub async fn set_role_pinned(&self, user_id: i64, pinned: bool, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query("UPDATE users SET role_pinned = $1, updated_at = $2 WHERE id = $3")
            .bind(b(pinned))
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        crate::sync::user_changed(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Each user's organisation memberships with where they came from.
    pub async fn organisation_sources(&self, user_ids: &[i64]) -> Result<Vec<(i64, i64, OrgSource)>> {
        if user_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        for chunk in user_ids.chunks(500) {
            // Integers only: inlined, nothing to bind.
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            let rows = sqlx::query(&format!(
                "SELECT user_id, organisation_id, source FROM user_organisations WHERE user_id IN ({list}) ORDER BY user_id, organisation_id"
            ))
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let source: String = r.try_get(2)?;
                out.push((r.try_get(0)?, r.try_get(1)?, OrgSource::parse(&source)));
            }
        }
        Ok(out)
    }

    /// Memberships with their source, as (user, organisation name) rows for pages.
    pub async fn organisations_by_source(&self, user_id: i64) -> Result<Vec<(MembershipRow, OrgSource)>> {
        let rows = sqlx::query(
            "SELECT uo.user_id, o.id, o.name, uo.source FROM user_organisations uo JOIN organisations o ON o.id = uo.organisation_id \
             WHERE uo.user_id = $1 ORDER BY o.name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let source: String = r.try_get(3)?;
                Ok((MembershipRow { owner_id: r.try_get(0)?, id: r.try_get(1)?, name: r.try_get(2)? }, OrgSource::parse(&source)))
            })
            .collect()
    }
}

async fn end_credentials(conn: &mut AnyConnection, user_id: i64, now: i64) -> Result<Applied> {
    let sessions_ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?.rows_affected();
    let tokens_revoked = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(Applied { sessions_ended, tokens_revoked })
}

async fn add_memberships(conn: &mut AnyConnection, user_id: i64, orgs: &[(i64, OrgSource)]) -> Result<()> {
    for (org, source) in orgs {
        sqlx::query("INSERT INTO user_organisations (user_id, organisation_id, source) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(*org)
            .bind(source.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A new account's columns, bound in the order of the `users` inserts.
fn bind_account<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    a: &'q NewAccount,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(&a.username)
        .bind(&a.username_key)
        .bind(&a.name)
        .bind(&a.email)
        .bind(a.role.as_str())
        .bind(a.source.as_str())
        .bind(b(a.active))
        .bind(&a.external_id)
}

async fn create(conn: &mut AnyConnection, a: &NewAccount, now: i64) -> Result<i64> {
    let insert = sqlx::query(
        "INSERT INTO users (username, username_key, name, email, role, source, is_active, password_hash, \
         must_change_password, external_id, created_at, updated_at, validated_at, dir_disabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, 0, $8, $9, $9, $9, 1 - $7) RETURNING id",
    );
    let row = bind_account(insert, a).bind(now).fetch_one(&mut *conn).await.map_err(unique("user"))?;
    let id: i64 = row.try_get(0)?;
    add_memberships(conn, id, &a.organisations).await?;
    Ok(id)
}

/// Create new directory users and their memberships, 1,000 accounts per
/// statement (each chunk bound as one batch, `crate::batch`).
pub(crate) async fn create_accounts(conn: &mut AnyConnection, backend: Backend, accounts: &[&NewAccount], now: i64) -> Result<()> {
    let writes = AccountWrites::new(backend, accounts, now);
    writes.bound()?.run(conn).await
}

/// New directory users made into statements before the write transaction
/// (as `staging::RowWrites`): one insert of the users a 1,000 accounts,
/// bound by [`AccountWrites::bound`], then run with their memberships
/// (which need the users' new ids).
pub(crate) struct AccountWrites<'a> {
    backend: Backend,
    now: i64,
    inserts: Vec<(&'a [&'a NewAccount], crate::batch::Statement<'a>)>,
}

impl<'a> AccountWrites<'a> {
    pub(crate) fn new(backend: Backend, accounts: &'a [&'a NewAccount], now: i64) -> AccountWrites<'a> {
        use crate::batch::Cell;
        use crate::Col::{Int, Text};
        const COLUMNS: [crate::Col; 8] = [
            Text("username"),
            Text("username_key"),
            Text("name"),
            Text("email"),
            Text("role"),
            Text("source"),
            Int("active"),
            Text("external_id"),
        ];
        let mut inserts = Vec::new();
        for chunk in accounts.chunks(1000) {
            let mut batch = crate::batch::Batch::new(backend, &COLUMNS, chunk.len());
            for a in chunk {
                batch.push([
                    Cell::Text(&a.username),
                    Cell::Text(&a.username_key),
                    Cell::Text(&a.name),
                    Cell::Text(&a.email),
                    Cell::Text(a.role.as_str()),
                    Cell::Text(a.source.as_str()),
                    Cell::Int(b(a.active)),
                    Cell::Text(&a.external_id),
                ]);
            }
            // A user created disabled was disabled because of the directory.
            let sql = format!(
                "INSERT INTO users (username, username_key, name, email, role, source, is_active, password_hash, \
                 must_change_password, external_id, created_at, updated_at, validated_at, dir_disabled) \
                 SELECT a.username, a.username_key, a.name, a.email, a.role, a.source, a.active, NULL, 0, a.external_id, {now}, {now}, {now}, \
                 1 - a.active FROM ({}) a WHERE true{}",
                batch.source(),
                crate::batch::returning_keys(backend, "users"),
                now = batch.param(1),
            );
            inserts.push((chunk, crate::batch::Statement { sql, batch }));
        }
        AccountWrites { backend, now, inserts }
    }

    /// The inserts with their rows bound, in the order they run.
    pub(crate) fn bound(&self) -> Result<crate::batch::Bound<'_, Self>> {
        let queries = self.inserts.iter().map(|(_, st)| Ok(st.batch.bind(sqlx::query(&st.sql))?.bind(self.now))).collect::<Result<_>>()?;
        Ok(crate::batch::Bound { writes: self, queries })
    }
}

impl crate::batch::Bound<'_, AccountWrites<'_>> {
    /// Run the inserts inside the caller's transaction, and add each new
    /// user's memberships.
    pub(crate) async fn run(self, conn: &mut AnyConnection) -> Result<()> {
        let w = self.writes;
        for ((accounts, _), insert) in w.inserts.iter().zip(self.queries) {
            let created = crate::batch::inserted_keys(&mut *conn, w.backend, "users", insert).await.map_err(|e| match e {
                crate::Error::Database(e) => unique("user")(e),
                other => other,
            })?;
            let by_external_id: std::collections::HashMap<&str, &&NewAccount> =
                accounts.iter().map(|a| (a.external_id.as_str(), a)).collect();
            let mut pairs = Vec::new();
            for (id, external_id) in &created {
                let id = *id;
                if let Some(a) = by_external_id.get(external_id.as_str()) {
                    let mut seen = std::collections::HashSet::new();
                    for (org, source) in a.organisations.iter().filter(|(org, _)| seen.insert(*org)) {
                        pairs.push((id, *org, source.as_str()));
                    }
                }
            }
            // Users created in this transaction have no membership yet, and
            // each organisation is named once per user: no conflict to skip
            // (a speculative `ON CONFLICT` insert cost 15 % more on
            // PostgreSQL).
            insert_memberships(conn, w.backend, &pairs, false).await?;
        }
        Ok(())
    }
}

/// Insert memberships `(user, organisation, source)`, 1,000 per statement
/// (`crate::batch`); with `skip_existing`, one a user has already is left
/// as it is.
async fn insert_memberships(conn: &mut AnyConnection, backend: Backend, pairs: &[(i64, i64, &str)], skip_existing: bool) -> Result<()> {
    use crate::batch::Cell;
    use crate::Col::{Int, Text};
    const COLUMNS: [crate::Col; 3] = [Int("user_id"), Int("organisation_id"), Text("source")];
    for chunk in pairs.chunks(1000) {
        let mut batch = crate::batch::Batch::new(backend, &COLUMNS, chunk.len());
        for (user, org, source) in chunk {
            batch.push([Cell::Int(*user), Cell::Int(*org), Cell::Text(source)]);
        }
        let sql = format!(
            "INSERT INTO user_organisations (user_id, organisation_id, source) SELECT m.user_id, m.organisation_id, m.source FROM ({}) m \
             WHERE true{}",
            batch.source(),
            if skip_existing { " ON CONFLICT DO NOTHING" } else { "" }
        );
        batch.bind(sqlx::query(&sql))?.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Apply updates, without [`crate::sync::users_changed`], which the caller
/// runs: the users' rows in one statement per chunk, memberships added and
/// removed in one statement each, and the sessions and tokens of the
/// disabled ended together (a sync's chunk of 110 changes was 140
/// statements, now 6). Returns how many sessions ended and tokens were
/// revoked.
async fn update_many(conn: &mut AnyConnection, backend: Backend, updates: &[&Update], now: i64) -> Result<Applied> {
    let rows: Vec<&&Update> = updates.iter().filter(|u| u.changes_attributes() || u.activation.is_some()).collect();
    let active = |u: &Update| match u.activation {
        Some(Activation::Disable) => Some(false),
        Some(Activation::Enable) => Some(true),
        None => None,
    };
    // 1,000 users a statement, bound as one batch (see `create_many`);
    // a field an update leaves out is NULL, and keeps the user's value.
    use crate::batch::Cell;
    use crate::Col::{Int, Text};
    const COLUMNS: [crate::Col; 8] =
        [Int("id"), Text("username"), Text("username_key"), Text("name"), Text("email"), Text("external_id"), Text("role"), Int("active")];
    for chunk in rows.chunks(1000) {
        let mut batch = crate::batch::Batch::new(backend, &COLUMNS, chunk.len());
        for u in chunk {
            batch.push([
                Cell::Int(u.user_id),
                u.rename.as_ref().map(|(n, _)| n.as_str()).into(),
                u.rename.as_ref().map(|(_, k)| k.as_str()).into(),
                u.name.as_deref().into(),
                u.email.as_deref().into(),
                u.external_id.as_deref().into(),
                u.role.map(|(_, after)| after.as_str()).into(),
                active(u).map(b).into(),
            ]);
        }
        let sql = format!(
            "UPDATE users SET username = COALESCE(v.username, users.username), username_key = COALESCE(v.username_key, users.username_key), \
             name = COALESCE(v.name, users.name), email = COALESCE(v.email, users.email), external_id = COALESCE(v.external_id, users.external_id), \
             role = COALESCE(v.role, users.role), is_active = COALESCE(v.active, users.is_active), \
             dir_disabled = CASE WHEN v.active IS NULL THEN users.dir_disabled WHEN v.active = 0 THEN 1 ELSE 0 END, \
             updated_at = {now}, validated_at = {now} FROM ({}) AS v WHERE users.id = v.id",
            batch.source(),
            now = batch.param(1),
        );
        batch.bind(sqlx::query(&sql))?.bind(now).execute(&mut *conn).await.map_err(unique("user"))?;
    }
    let added: Vec<(i64, i64, &str)> =
        updates.iter().flat_map(|u| u.add_organisations.iter().map(move |(org, source)| (u.user_id, *org, source.as_str()))).collect();
    insert_memberships(conn, backend, &added, true).await?;
    // Integers and fixed words only below: inlined, nothing to bind.
    let removed: Vec<String> =
        updates.iter().flat_map(|u| u.remove_organisations.iter().map(move |org| format!("({}, {org})", u.user_id))).collect();
    for chunk in removed.chunks(500) {
        sqlx::query(&format!(
            "DELETE FROM user_organisations WHERE source = 'mapping' AND (user_id, organisation_id) IN (VALUES {})",
            chunk.join(",")
        ))
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    }
    let disabled: Vec<i64> = updates.iter().filter(|u| u.activation == Some(Activation::Disable)).map(|u| u.user_id).collect();
    let mut applied = Applied::default();
    for chunk in disabled.chunks(500) {
        let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        applied.sessions_ended += sqlx::query(&format!("DELETE FROM sessions WHERE user_id IN ({list})"))
            .persistent(false)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        applied.tokens_revoked +=
            sqlx::query(&format!("UPDATE api_tokens SET revoked_at = $1 WHERE user_id IN ({list}) AND revoked_at IS NULL"))
                .persistent(false)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
    }
    Ok(applied)
}
