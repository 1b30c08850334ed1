//! Reading only what changed in the directory since the last run.
//!
//! One shape for every method, so the service decides what a change means in
//! one place (the identity rule), whatever the directory:
//!
//! * OpenLDAP / 389-ds: RFC 4533 content synchronisation (syncrepl) in
//!   refreshOnly mode, by `entryUUID`, with deletions from `refreshDeletes`
//!   or the present phase;
//! * Active Directory: the DirSync control, or `uSNChanged` above the last
//!   value seen together with the Deleted Objects container.
//!
//! A cookie (syncrepl cookie, DirSync cookie, or highest USN) belongs to one
//! server and one search OU; the caller stores it per (server, OU) and starts
//! from a full enumeration after a failover or any change of the settings.

use crate::enumerate::Entry;

/// How a directory can be read for changes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaMethod {
    /// RFC 4533 refreshOnly with a cookie (OpenLDAP syncprov, 389-ds).
    Syncrepl,
    /// Active Directory's DirSync control (`1.2.840.113556.1.4.841`).
    Dirsync,
    /// Active Directory's `uSNChanged` above the last value seen, with
    /// deletions from Deleted Objects when the account may read it.
    Usn,
    /// Changes cannot be read: every run is a full enumeration.
    None,
}

impl DeltaMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DeltaMethod::Syncrepl => "syncrepl",
            DeltaMethod::Dirsync => "dirsync",
            DeltaMethod::Usn => "usn",
            DeltaMethod::None => "none",
        }
    }

    /// The method [`DeltaMethod::as_str`] named; anything else is `None`.
    pub fn parse(s: &str) -> Self {
        [DeltaMethod::Syncrepl, DeltaMethod::Dirsync, DeltaMethod::Usn].into_iter().find(|m| m.as_str() == s).unwrap_or(DeltaMethod::None)
    }
}

/// What Test connection found out about reading changes, with the reason in
/// plain words ("the service account lacks the DirSync right", "no syncprov
/// overlay on this database", "deletions cannot be seen: Deleted Objects is
/// not readable by the service account").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeltaSupport {
    pub method: DeltaMethod,
    /// Whether deletions are reported by this method for this account.
    pub sees_deletions: bool,
    pub reason: String,
}

/// One change read from the directory.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added, modified, renamed, enabled or disabled: the entry as it is now.
    Upsert(Entry),
    /// Gone from the search scope (deleted, or moved out of the OU), by the
    /// immutable id `Entry::uid` would carry. syncrepl also reports here
    /// entries that changed outside the search's scope (OpenLDAP's session
    /// log cannot tell whether they were ever in it): an entry is gone only
    /// when no search OU of the run reports it as an `Upsert`.
    Delete { uid: String },
}

/// The result of one delta read of one search OU on one server.
#[derive(Debug, Clone, Default)]
pub struct DeltaBatch {
    /// The search OU read (a cookie belongs to one search).
    pub search_ou: String,
    pub changes: Vec<Change>,
    /// `Some` when the read listed every entry still in the OU (syncrepl's
    /// present phase, RFC 4533 §3.4.1): the immutable ids reported present
    /// without a change. Every known entry of the OU that is neither here
    /// nor in `changes` is gone. `None`: deletions are in `changes`.
    pub present: Option<Vec<String>>,
    /// The cookie to store for the next run (opaque to the caller).
    pub cookie: String,
    /// The server that answered, which the cookie belongs to.
    pub server: String,
}

/// Why a delta read could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    /// The cookie is stale, refused or belongs to another server
    /// (syncrepl `e-syncRefreshRequired`, an expired DirSync cookie): run a
    /// full enumeration and record a new cookie. The string says why.
    FullRequired(String),
    /// The read failed or was cut short: nothing may be concluded from it
    /// (in particular nobody is disabled).
    Failed(crate::Failure),
}

impl std::fmt::Display for DeltaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeltaError::FullRequired(why) => write!(f, "a full enumeration is required: {why}"),
            DeltaError::Failed(failure) => write!(f, "{}", failure.message),
        }
    }
}
