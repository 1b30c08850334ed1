//! Bindery's use-cases. Every public operation that reads or changes
//! administrative state takes the calling [`Actor`] and checks its role
//! *here*, so the console's server functions and the REST API cannot
//! disagree about who may do what.

mod accounts;
mod auth;
pub mod crypto;
mod delta;
mod directories;
mod dirlogin;
mod explain;
mod gateways;
pub mod identity;
mod import;
mod integrity;
mod lifecycle;
mod live;
mod lockout;
mod logs;
pub mod net;
mod secret;
mod settings;
pub mod sync;
pub mod util;

use std::time::Duration;

use bindery_model::{FieldError, Role};
pub use bindery_store::{Backend, Store};

pub use auth::{ClientInfo, Issue, Issued, LoginFailure, LoginSuccess, API_KEY_NAME, BEARER_TOKEN_NAME, SESSION_COOKIE};
pub use crypto::SecretKey;
pub use lifecycle::mapped_access;
pub use secret::Secret;
pub use sync::Schedule;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sign in first")]
    Unauthenticated,
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("change your one-time password first")]
    PasswordChangeRequired,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] bindery_store::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldError::new(field, message)])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    Session,
    ApiToken,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub role: Role,
    pub must_change_password: bool,
    pub via: AuthVia,
}

/// The caller of an operation: who, and from where (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    pub ip: String,
}

impl Actor {
    /// The first administrator (user 1, created by `bootstrap`) acting from
    /// this machine: for tests and benchmarks, never for a request.
    #[cfg(any(test, feature = "testing"))]
    pub fn local_admin() -> Actor {
        Actor {
            principal: Principal {
                user_id: 1,
                username: "admin".into(),
                name: "Administrator".into(),
                role: Role::Admin,
                must_change_password: false,
                via: AuthVia::Session,
            },
            ip: "127.0.0.1".into(),
        }
    }

    /// Admins may change anything; nothing else may change anything.
    pub fn require_admin(&self) -> Result<()> {
        self.require_usable()?;
        match self.principal.role {
            Role::Admin => Ok(()),
            Role::Auditor | Role::User => Err(Error::Forbidden),
        }
    }

    /// Admins and auditors may read administrative pages.
    pub fn require_reader(&self) -> Result<()> {
        self.require_usable()?;
        if self.principal.role.can_read_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    fn require_usable(&self) -> Result<()> {
        if self.principal.must_change_password {
            Err(Error::PasswordChangeRequired)
        } else {
            Ok(())
        }
    }
}

/// Tunables that come from the server's configuration, not the database.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every failed login answer takes at least this long, whatever the
    /// reason, so timing does not tell an unknown user from a bad password.
    pub min_failure_delay: Duration,
    /// Encrypts directory secrets at rest.
    pub secret_key: SecretKey,
    /// Where sync reports are emailed; `None`: console only.
    pub smtp: Option<SmtpOptions>,
    /// Hard stop for a paged enumeration that never ends: at most this
    /// many pages per search OU, then the run is incomplete. Tests lower it
    /// to reach the cut-off quickly.
    pub max_enumeration_pages: usize,
}

/// A plain-SMTP relay (e.g. the local MTA) for sync reports.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub host: String,
    pub port: u16,
    /// The reports' From address.
    pub from: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_failure_delay: Duration::from_millis(400),
            secret_key: SecretKey::generate(),
            smtp: None,
            max_enumeration_pages: bindery_directory::probe::MAX_PAGES,
        }
    }
}

/// The application service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    store: Store,
    options: std::sync::Arc<Options>,
    gateways: std::sync::Arc<gateways::Gateways>,
    jobs: std::sync::Arc<import::Jobs>,
    settings: std::sync::Arc<settings::SettingsCache>,
    /// The file holding the first administrator's one-time password, if
    /// this process wrote (or found) it: deleted at their first change.
    initial_password_file: std::sync::Arc<std::sync::Mutex<Option<std::path::PathBuf>>>,
    /// This replica's lockout slots (see [`lockout`]).
    lockouts: std::sync::Arc<lockout::Lockouts>,
    /// When this replica last applied the log retention (ms; 0: not yet).
    last_log_purge: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// This replica's live change streams (see [`live`]).
    live: std::sync::Arc<live::Streams>,
}

impl Service {
    pub fn new(store: Store, options: Options) -> Service {
        Service {
            store,
            options: std::sync::Arc::new(options),
            gateways: Default::default(),
            jobs: Default::default(),
            settings: Default::default(),
            lockouts: Default::default(),
            initial_password_file: Default::default(),
            last_log_purge: Default::default(),
            live: Default::default(),
        }
    }

    /// Remember where the first administrator's one-time password was
    /// written, to delete the file when `admin` first changes it.
    pub fn set_initial_password_file(&self, path: std::path::PathBuf) {
        if let Ok(mut f) = self.initial_password_file.lock() {
            *f = Some(path);
        }
    }

    /// `admin` still has to change the one-time password of the first start.
    pub async fn initial_password_pending(&self) -> Result<bool> {
        Ok(self.store.find_user("admin").await?.is_some_and(|u| u.must_change_password && u.is_local()))
    }

    /// After a password change of `user_key`: the first administrator's
    /// one-time password file goes once `admin` has chosen their own.
    pub(crate) fn password_changed(&self, username_key: &str) {
        if username_key != "admin" {
            return;
        }
        let Some(path) = self.initial_password_file.lock().ok().and_then(|mut f| f.take()) else { return };
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "deleted the first administrator's one-time password file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot delete the one-time password file; delete it by hand"),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// First start: make sure the Default organisation and an `admin`
    /// exist. Returns the one-time password when `admin` was created, for
    /// the caller to print once.
    pub async fn bootstrap(&self) -> Result<Option<Secret>> {
        self.migrate_username_keys().await?;
        let now = util::now_ms();
        // A crash or restart never leaves a run stuck as "running".
        // SQLite belongs to this one process: whatever ran before is gone.
        // PostgreSQL may be shared by live replicas: only runs whose lease
        // has expired are (here and on every scheduler tick).
        let interrupted = match self.store.backend() {
            Backend::Sqlite => self.store.interrupt_running_runs(now).await?,
            Backend::Postgres => self.store.interrupt_orphaned_runs(now).await?,
        };
        if interrupted > 0 {
            tracing::warn!(runs = interrupted, "marked runs left running by the previous process as interrupted");
        }
        if self.store.default_organisation().await?.is_none() {
            self.store.insert_organisation("Default", true, now).await?;
        }
        let (users, _) = self.store.count_users().await?;
        if users > 0 {
            return Ok(None);
        }
        let password = util::random_password();
        let hash = util::hash_password(password.expose())?;
        let org = self.store.default_organisation().await?.map(|o| o.id);
        self.store
            .insert_user(&bindery_store::NewUserRow {
                username: "admin",
                username_key: "admin",
                name: "Administrator",
                email: "",
                role: Role::Admin.as_str(),
                source: "local",
                is_active: true,
                password_hash: Some(&hash),
                must_change_password: true,
                external_id: None,
                organisation_ids: org.as_slice(),
                now,
            })
            .await?;
        Ok(Some(password))
    }
}

/// What the HTTP layer learned about a request: put into the request's
/// extensions by the server's middleware, read by server functions and REST
/// handlers.
#[derive(Clone, Default)]
pub struct RequestContext {
    pub principal: Option<Principal>,
    pub client: ClientInfo,
    /// The session cookie's value, when the request carried a valid one.
    pub session_token: Option<String>,
    /// Cookies get `Secure` when the console is reached over HTTPS.
    pub secure: bool,
}

impl std::fmt::Debug for RequestContext {
    /// The session cookie's value is a secret: it never shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RequestContext { principal, client, session_token, secure } = self;
        f.debug_struct("RequestContext")
            .field("principal", principal)
            .field("client", client)
            .field("session_token", &session_token.as_ref().map(|_| "<redacted>"))
            .field("secure", secure)
            .finish()
    }
}

impl RequestContext {
    /// The caller as an [`Actor`], or `Unauthenticated`.
    pub fn actor(&self) -> Result<Actor> {
        match &self.principal {
            Some(p) => Ok(Actor { principal: p.clone(), ip: self.client.ip.clone() }),
            None => Err(Error::Unauthenticated),
        }
    }
}
