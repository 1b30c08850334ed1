//! Row types as stored, and the borrowed inputs of inserts and updates.

use bindery_model::{Role, UserSource};

/// A 0/1 column as a flag. The `Any` driver decodes those columns only as
/// integers; `#[sqlx(try_from = "i64")]` turns them into this, in the row
/// types, so no call site compares with 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl From<i64> for Flag {
    fn from(v: i64) -> Flag {
        Flag(v != 0)
    }
}

/// A user as stored, with its integer flags and strings already turned
/// into their types (here, once: the `Any` driver decodes the 0/1 columns
/// only as integers). `password_hash` is `None` for directory users.
#[derive(Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub username_key: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub source: UserSource,
    pub is_active: bool,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub external_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
    pub validated_at: Option<i64>,
    /// Disabled by Bindery because of the directory (only those are enabled again by it).
    pub dir_disabled: bool,
    /// The role is managed in Bindery: the directory never changes it.
    pub role_pinned: bool,
}

impl UserRow {
    pub fn is_local(&self) -> bool {
        self.source == UserSource::Local
    }
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for UserRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        let flag = |name: &str| -> sqlx::Result<bool> { Ok(row.try_get::<i64, _>(name)? != 0) };
        let role: String = row.try_get("role")?;
        let source: String = row.try_get("source")?;
        Ok(UserRow {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            username_key: row.try_get("username_key")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            role: Role::parse(&role).unwrap_or_default(),
            source: UserSource::parse(&source).ok_or_else(|| sqlx::Error::Decode(format!("unknown user source {source:?}").into()))?,
            is_active: flag("is_active")?,
            password_hash: row.try_get("password_hash")?,
            must_change_password: flag("must_change_password")?,
            external_id: row.try_get("external_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            last_login_at: row.try_get("last_login_at")?,
            validated_at: row.try_get("validated_at")?,
            dir_disabled: flag("dir_disabled")?,
            role_pinned: flag("role_pinned")?,
        })
    }
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("source", &self.source)
            .field("is_active", &self.is_active)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

pub struct NewUserRow<'a> {
    pub username: &'a str,
    pub username_key: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub source: &'a str,
    pub is_active: bool,
    pub password_hash: Option<&'a str>,
    pub must_change_password: bool,
    pub external_id: Option<&'a str>,
    pub organisation_ids: &'a [i64],
    pub now: i64,
}

pub struct UserRowUpdate<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub is_active: bool,
    pub organisation_ids: Option<&'a [i64]>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrganisationRow {
    pub id: i64,
    pub name: String,
    pub is_default: i64,
    pub created_at: i64,
    pub user_count: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub source: String,
    pub created_at: i64,
}

/// `owner_id` belongs to (`id`, `name`): a user's organisation or group, or a group's member.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub owner_id: i64,
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: i64,
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiTokenRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug)]
pub struct NewLoginEvent<'a> {
    pub at: i64,
    pub username: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub success: bool,
    pub reason: &'a str,
    pub method: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoginEventRow {
    pub id: i64,
    pub at: i64,
    pub username: String,
    pub ip: String,
    pub user_agent: String,
    #[sqlx(try_from = "i64")]
    pub success: Flag,
    pub reason: String,
    pub method: String,
}

pub struct NewOperationEvent<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
    pub ip: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OperationEventRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub ip: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockoutRow {
    pub key: String,
    pub failures: i64,
    pub last_at: i64,
}

/// A stored directory configuration; the secrets are ciphertexts.
#[derive(Clone, sqlx::FromRow)]
pub struct DirectoryRow {
    pub kind: String,
    pub settings_json: String,
    pub bind_password_enc: Option<String>,
    pub client_key_enc: Option<String>,
    pub updated_at: i64,
}

impl std::fmt::Debug for DirectoryRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryRow").field("kind", &self.kind).field("settings_json", &self.settings_json).finish_non_exhaustive()
    }
}
