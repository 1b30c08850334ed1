//! Reading only what changed in Active Directory: DirSync, or `uSNChanged`
//! with Deleted Objects.
//!
//! # Which method, and why (tried against Samba AD 4.17 and per Microsoft's docs)
//!
//! **DirSync** ([MS-ADTS] 3.1.1.3.4.1.3, control `1.2.840.113556.1.4.841`) is
//! preferred. It reports every object with a replicated change since the
//! cookie, in one search of the naming context, and with
//! `LDAP_DIRSYNC_INCREMENTAL_VALUES` a group comes back with only the member
//! values added (`member;range=1-1`) and removed (`member;range=0-0`) — the
//! one way to see a *removal* from a group (a demotion through the group
//! mapping) without keeping a copy of every group. Its cookie carries the
//! server's invocation id and up-to-dateness, so the server itself refuses a
//! cookie that is not its own (Samba: result 12, "Unable to unmarshall
//! cookie").
//!
//! * With the "Replicating Directory Changes" right (DS-Replication-Get-
//!   Changes on the domain) DirSync also reports deletions: the tombstone
//!   (`isDeleted: TRUE`, moved under `CN=Deleted Objects`) with its
//!   `objectGUID`. On Windows the right is enough; Samba 4.17 still applies
//!   read access to the tombstones, so the account must also be allowed to
//!   list and read Deleted Objects (`dsacls ... /G account:LCRP`), which the
//!   test kit's `bindery-repl` is. [`detect`] therefore looks for a tombstone
//!   through DirSync itself rather than trusting the right.
//! * Without it, the server refuses DirSync (result 50) unless the request
//!   sets `LDAP_DIRSYNC_OBJECT_SECURITY`; then it returns only what the
//!   account may read, which for an ordinary account excludes the tombstones
//!   in Deleted Objects: changes and group membership (with removals) are
//!   seen, deletions are not (measured against Samba: the deleted user
//!   simply never appears).
//!
//! **USN** (`uSNChanged` above the highest committed USN seen, with the
//! show-deleted control `1.2.840.113556.1.4.417` under `CN=Deleted Objects`)
//! is the fallback when DirSync is unavailable, or when an account lacking the
//! DirSync right was allowed to list Deleted Objects (then USN sees deletions
//! and DirSync with object security would not). Its weakness: `memberOf` is
//! a back-link, so adding or removing a member changes the *group's*
//! `uSNChanged`, not the user's (verified against Samba). A USN run reads the
//! changed groups and re-reads their current members, so an addition is
//! seen; a *removal* is not (the removed user is no longer listed, and
//! Samba does not support the show-deactivated-links control that would
//! list it): [`read_changes_and_groups`] names the changed groups, and the
//! caller, which knows who was in them, re-reads those users with
//! [`reread_users`]. By default Deleted
//! Objects is readable only by administrators: an ordinary account sees the
//! container but none of the tombstones in it.
//!
//! # How a read works
//!
//! Changed objects are never mapped from what DirSync returns (only the
//! changed attributes): their `objectGUID`s, and the members added to or
//! removed from changed groups, are re-read under the search OU with the
//! login filter and the same attributes, mapping and group computation as
//! the full enumeration, so an `Upsert` is exactly the entry a full run would
//! have produced. An object that changed but is no longer found under the OU
//! is left alone, except that a user DirSync shows as moved or renamed
//! (`parentGUID` in the change) which now lives outside the OU is reported
//! as `Delete` ("gone from the search scope"). When several OUs are read,
//! an `Upsert` in one OU's batch must win over a `Delete` of the same uid in
//! another's.
//!
//! The cookie is an opaque string (JSON) holding the method, the server
//! that issued it, the naming context and OU it belongs to, and the
//! DirSync cookie or the highest USN with the server's invocation id. A
//! cookie read on another server, for another OU, older than
//! [`MAX_COOKIE_AGE`] or refused by the server gives
//! [`DeltaError::FullRequired`].
//!
//! Each read of an OU is one DirSync search of the whole naming context
//! (AD refuses DirSync below a naming context's root: result 53), plus a
//! few re-reading searches of at most 50 ids each. Every LDAP operation
//! runs within `cfg.op_timeout`, every connect within `cfg.connect_timeout`.
//!
//! [MS-ADTS]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-adts/

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use base64::Engine as _;
use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry};

use crate::delta::{Change, DeltaBatch, DeltaError, DeltaMethod, DeltaSupport};
use crate::enumerate::{all_users_filter, uid_of, Entry};
use crate::probe::{all, first, map_entry};
use crate::{conn, dn, DirectoryConfig, Failure};

/// The DirSync control ([MS-ADTS] 3.1.1.3.4.1.3).
pub const DIRSYNC_OID: &str = "1.2.840.113556.1.4.841";
/// The show-deleted control: tombstones are returned by searches.
pub const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// `LDAP_DIRSYNC_OBJECT_SECURITY`: no replication right needed; only what
/// the account may read is returned (no tombstones for ordinary accounts).
pub const DIRSYNC_OBJECT_SECURITY: u32 = 0x1;
/// `LDAP_DIRSYNC_PUBLIC_DATA_ONLY`: never return secret attributes.
pub const DIRSYNC_PUBLIC_DATA_ONLY: u32 = 0x2000;
/// `LDAP_DIRSYNC_INCREMENTAL_VALUES`: linked attributes (`member`) come back
/// as the values added (`;range=1-1`) and removed (`;range=0-0`) only.
pub const DIRSYNC_INCREMENTAL_VALUES: u32 = 0x8000_0000;

/// Flags for an account holding "Replicating Directory Changes".
pub const DIRSYNC_FLAGS_REPLICATION: u32 = DIRSYNC_PUBLIC_DATA_ONLY | DIRSYNC_INCREMENTAL_VALUES;
/// Flags for an ordinary account.
pub const DIRSYNC_FLAGS_OBJECT_SECURITY: u32 = DIRSYNC_OBJECT_SECURITY | DIRSYNC_PUBLIC_DATA_ONLY | DIRSYNC_INCREMENTAL_VALUES;

/// A cookie older than this is refused (a full enumeration runs instead):
/// well inside AD's tombstone lifetime (60 or 180 days), after which a
/// deletion leaves no trace a delta read could find.
pub const MAX_COOKIE_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How many ids or DNs one re-reading search asks for.
const CHUNK: usize = 50;

/// What DirSync and USN searches ask for: users (computers are users too,
/// and are dropped by the re-read with the login filter) and groups.
const CHANGED_FILTER: &str = "(|(objectClass=user)(objectClass=group))";

/// A filter that matches no object, through the `objectGUID` index: asks
/// the server for a cookie without reading anything.
const NOTHING_FILTER: &str = "(objectGUID=\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00\\00)";

/// The stored state between two delta reads (serialised as the cookie).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cookie {
    v: u8,
    method: DeltaMethod,
    /// The server (URI as configured) that issued it.
    server: String,
    /// The naming context (DirSync's search base, as the server spells it)
    /// and the search OU (normalised).
    nc: String,
    ou: String,
    /// Unix seconds when it was issued.
    issued: u64,
    /// DirSync: flags and the server's cookie (base64).
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    dirsync: String,
    /// USN: the highest committed USN before the read, and the server's
    /// invocation id (hex), which changes when the DC is restored.
    #[serde(default)]
    usn: u64,
    #[serde(default)]
    invocation: String,
}

impl Cookie {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("cookie serialises")
    }

    fn decode(s: &str) -> Result<Cookie, DeltaError> {
        let c: Cookie = serde_json::from_str(s)
            .map_err(|_| DeltaError::FullRequired("the stored cookie is not an Active Directory delta cookie".into()))?;
        if c.v != 1 {
            return Err(DeltaError::FullRequired(format!("the stored cookie has version {}, not 1", c.v)));
        }
        Ok(c)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// --- BER for the DirSync control value ---------------------------------------
//
// Request:  SEQUENCE { flags INTEGER, maxAttributeCount INTEGER, cookie OCTET STRING }
// Response: SEQUENCE { moreResults INTEGER, unused INTEGER, cookie OCTET STRING }
// Flags are a 32-bit value that AD reads as a signed int: 0x80000000 is
// sent as the 4-byte two's complement, as OpenLDAP's ldapsearch does.

fn ber_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn ber_tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    ber_len(content.len(), out);
    out.extend_from_slice(content);
}

/// Minimal two's complement of `v`.
fn ber_int(v: i32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut i = 0;
    while i < 3 && ((b[i] == 0 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0)) {
        i += 1;
    }
    b[i..].to_vec()
}

/// The DirSync request control's value.
pub fn encode_dirsync(flags: u32, max_attr_count: i32, cookie: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    ber_tlv(0x02, &ber_int(flags as i32), &mut body);
    ber_tlv(0x02, &ber_int(max_attr_count), &mut body);
    ber_tlv(0x04, cookie, &mut body);
    let mut out = Vec::new();
    ber_tlv(0x30, &body, &mut out);
    out
}

/// Read one TLV: (tag, content, rest).
fn ber_read(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l, mut rest) = rest.split_first()?;
    let len = if l < 0x80 {
        l as usize
    } else {
        let n = (l & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn ber_read_int(content: &[u8]) -> Option<i64> {
    if content.is_empty() || content.len() > 8 {
        return None;
    }
    let mut v: i64 = if content[0] & 0x80 != 0 { -1 } else { 0 };
    for b in content {
        v = (v << 8) | *b as i64;
    }
    Some(v)
}

/// The DirSync response control's value: (more results, cookie).
pub fn decode_dirsync(v: &[u8]) -> Option<(bool, Vec<u8>)> {
    let (tag, seq, _) = ber_read(v)?;
    if tag != 0x30 {
        return None;
    }
    let (t1, more, rest) = ber_read(seq)?;
    let (t2, _, rest) = ber_read(rest)?;
    let (t3, cookie, _) = ber_read(rest)?;
    if t1 != 0x02 || t2 != 0x02 || t3 != 0x04 {
        return None;
    }
    Some((ber_read_int(more)? != 0, cookie.to_vec()))
}

// --- Helpers ------------------------------------------------------------------

/// An entry's `objectGUID`, wherever ldap3 put it (a GUID whose bytes
/// happen to be valid UTF-8 lands among the text attributes).
pub(crate) fn guid_bytes(e: &SearchEntry) -> Option<Vec<u8>> {
    if let Some(v) = e.bin_attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("objectGUID")).and_then(|(_, v)| v.first()) {
        return Some(v.clone());
    }
    first(e, "objectGUID").map(|s| s.as_bytes().to_vec()).filter(|b| b.len() == 16)
}

/// `(objectGUID=\xx…)` for one GUID.
fn guid_filter(guid: &[u8]) -> String {
    let mut f = String::from("(objectGUID=");
    for b in guid {
        f.push_str(&format!("\\{b:02x}"));
    }
    f.push(')');
    f
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn failed(e: ldap3::LdapError, what: &str, cfg: &DirectoryConfig) -> DeltaError {
    DeltaError::Failed(Failure::from_ldap(e, what, cfg.op_timeout))
}

/// Whether `child` is `parent` or below it.
fn under(child: &str, parent: &str) -> bool {
    let (c, p) = (dn::normalize(child), dn::normalize(parent));
    // `normalize` writes the separating comma as \u{1} (a decoded `\,` is data).
    c == p || c.ends_with(&format!("\u{1}{p}"))
}

struct RootDse {
    naming_contexts: Vec<String>,
    default_nc: Option<String>,
    controls: Vec<String>,
    highest_usn: Option<u64>,
    service: Option<String>,
}

async fn root_dse(ldap: &mut Ldap, cfg: &DirectoryConfig) -> Result<RootDse, DeltaError> {
    let what = "read the root DSE";
    let (entries, _) = ldap
        .with_timeout(cfg.op_timeout)
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            vec!["namingContexts", "defaultNamingContext", "supportedControl", "highestCommittedUSN", "dsServiceName"],
        )
        .await
        .map_err(|e| failed(e, what, cfg))?
        .success()
        .map_err(|e| failed(e, what, cfg))?;
    let e = entries
        .into_iter()
        .next()
        .map(SearchEntry::construct)
        .ok_or_else(|| DeltaError::Failed(Failure::answer("the root DSE is empty")))?;
    Ok(RootDse {
        naming_contexts: all(&e, "namingContexts").into_iter().map(String::from).collect(),
        default_nc: first(&e, "defaultNamingContext").map(String::from),
        controls: all(&e, "supportedControl").into_iter().map(String::from).collect(),
        highest_usn: first(&e, "highestCommittedUSN").and_then(|s| s.parse().ok()),
        service: first(&e, "dsServiceName").map(String::from),
    })
}

/// The naming context holding `ou` (the longest one it ends with).
fn naming_context(root: &RootDse, ou: &str) -> Option<String> {
    root.naming_contexts.iter().chain(root.default_nc.iter()).filter(|nc| under(ou, nc)).max_by_key(|nc| nc.len()).cloned()
}

/// The server's invocation id (hex), from its NTDS Settings object.
async fn invocation_id(ldap: &mut Ldap, cfg: &DirectoryConfig, root: &RootDse) -> Result<String, DeltaError> {
    let Some(service) = &root.service else {
        return Err(DeltaError::Failed(Failure::answer("the root DSE has no dsServiceName: not Active Directory")));
    };
    let what = "read the domain controller's invocation id";
    let (entries, _) = ldap
        .with_timeout(cfg.op_timeout)
        .search(service, Scope::Base, "(objectClass=*)", vec!["invocationId"])
        .await
        .map_err(|e| failed(e, what, cfg))?
        .success()
        .map_err(|e| failed(e, what, cfg))?;
    let e = entries.into_iter().next().map(SearchEntry::construct);
    let id = e.and_then(|e| {
        e.bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("invocationId"))
            .and_then(|(_, v)| v.first().cloned())
            .or_else(|| first(&e, "invocationId").map(|s| s.as_bytes().to_vec()))
    });
    id.map(|b| hex(&b)).ok_or_else(|| DeltaError::Failed(Failure::answer("the domain controller's invocation id is not readable")))
}

/// Connect and bind to the first server that answers, or to `prefer` (a
/// cookie's server). Returns the server's URI as configured.
async fn connect(cfg: &DirectoryConfig, prefer: Option<&str>) -> Result<(String, Ldap), DeltaError> {
    let mut order: Vec<&conn::ServerUri> = Vec::new();
    if let Some(p) = prefer {
        match cfg.servers.iter().find(|s| s.to_string() == p) {
            Some(s) => order.push(s),
            None => {
                return Err(DeltaError::FullRequired(format!(
                    "the cookie belongs to {p}, which is no longer a configured server: a full enumeration is needed"
                )))
            }
        }
    }
    order.extend(cfg.servers.iter().filter(|s| Some(s.to_string().as_str()) != prefer));
    let mut last = Failure::unreachable("no directory server configured");
    for server in order {
        match conn::connect(server, cfg).await {
            Ok((mut ldap, _)) => match conn::service_bind(&mut ldap, cfg).await {
                Ok(()) => {
                    let name = server.to_string();
                    if let Some(p) = prefer {
                        if p != name {
                            let _ = ldap.unbind().await;
                            return Err(DeltaError::FullRequired(format!(
                                "{p}, which issued the cookie, did not answer ({}); {name} did, and a cookie belongs to one domain controller: a full enumeration is needed",
                                last.message
                            )));
                        }
                    }
                    return Ok((name, ldap));
                }
                Err(f) => {
                    let _ = ldap.unbind().await;
                    if !f.unreachable {
                        return Err(DeltaError::Failed(f));
                    }
                    last = f;
                }
            },
            Err((_, f, _)) => last = f,
        }
    }
    Err(DeltaError::Failed(last))
}

/// One DirSync search from `cookie` (following "more results" until the
/// server has no more): the entries and the new cookie.
async fn dirsync(
    ldap: &mut Ldap,
    cfg: &DirectoryConfig,
    nc: &str,
    filter: &str,
    flags: u32,
    mut cookie: Vec<u8>,
) -> Result<(Vec<SearchEntry>, Vec<u8>), (Option<u32>, DeltaError)> {
    let mut out = Vec::new();
    for page in 0..cfg.max_pages.max(1) {
        let control = RawControl { ctype: DIRSYNC_OID.into(), crit: true, val: Some(encode_dirsync(flags, 0, &cookie)) };
        let what = format!("DirSync search of {nc} (page {})", page + 1);
        let r =
            ldap.with_controls(vec![control]).with_timeout(cfg.op_timeout).search(nc, Scope::Subtree, filter, Vec::<String>::new()).await;
        let (raw, result) = match r {
            Ok(r) => (r.0, r.1),
            Err(e) => return Err((None, failed(e, &what, cfg))),
        };
        if result.rc != 0 {
            let rc = result.rc;
            return Err((Some(rc), failed(ldap3::LdapError::LdapResult { result }, &what, cfg)));
        }
        let response = result.ctrls.iter().find(|c| c.1.ctype == DIRSYNC_OID).and_then(|c| c.1.val.as_deref()).and_then(decode_dirsync);
        let Some((more, next)) = response else {
            return Err((None, DeltaError::Failed(Failure::answer(format!("{what}: the server sent no DirSync cookie back")))));
        };
        out.extend(raw.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).map(SearchEntry::construct));
        cookie = next;
        if !more {
            return Ok((out, cookie));
        }
    }
    Err((
        None,
        DeltaError::Failed(Failure::answer(format!("DirSync of {nc} still had more results after {} pages: incomplete", cfg.max_pages))),
    ))
}

// --- Detection ---------------------------------------------------------------------

/// Which delta method the service account may use on the first server that
/// answers, and why (for Test connection). Never an error: an unreachable
/// server gives [`DeltaMethod::None`] with the reason.
pub async fn detect(cfg: &DirectoryConfig) -> DeltaSupport {
    match connect(cfg, None).await {
        Ok((_, mut ldap)) => {
            let s = detect_on(&mut ldap, cfg).await;
            let _ = ldap.unbind().await;
            s
        }
        Err(e) => DeltaSupport { method: DeltaMethod::None, sees_deletions: false, reason: format!("could not check: {}", err_words(&e)) },
    }
}

/// [`detect`] on a connection already bound as the service account.
pub async fn detect_on(ldap: &mut Ldap, cfg: &DirectoryConfig) -> DeltaSupport {
    let none = |reason: String| DeltaSupport { method: DeltaMethod::None, sees_deletions: false, reason };
    let root = match root_dse(ldap, cfg).await {
        Ok(r) => r,
        Err(e) => return none(format!("the root DSE could not be read: {}", err_words(&e))),
    };
    let Some(ou) = cfg.search_ous.first() else { return none("no search OU is configured".into()) };
    let Some(nc) = naming_context(&root, ou) else {
        return none(format!("{ou} is in none of the server's naming contexts"));
    };
    let has_dirsync = root.controls.iter().any(|c| c == DIRSYNC_OID);
    let has_usn = root.highest_usn.is_some();
    if !has_dirsync && !has_usn {
        return none("not Active Directory: the server offers neither the DirSync control nor highestCommittedUSN".into());
    }
    let mut dirsync_words = String::from("the server does not offer the DirSync control");
    let mut object_security = false;
    if has_dirsync {
        match dirsync(ldap, cfg, &nc, NOTHING_FILTER, DIRSYNC_FLAGS_REPLICATION, Vec::new()).await {
            Ok(_) => {
                // Windows shows tombstones to this right; Samba only to an
                // account that may also read Deleted Objects. Look for one.
                return match dirsync_sees_tombstones(ldap, cfg, &nc).await {
                    Ok(true) => DeltaSupport {
                        method: DeltaMethod::Dirsync,
                        sees_deletions: true,
                        reason: "DirSync: the service account holds Replicating Directory Changes, so changes, group membership and deletions are read"
                            .into(),
                    },
                    Ok(false) => DeltaSupport {
                        method: DeltaMethod::Dirsync,
                        sees_deletions: false,
                        reason: "DirSync: the service account holds Replicating Directory Changes, but DirSync shows it no deleted object (Samba AD also requires read access to Deleted Objects; or nothing was ever deleted), so deletions are found only by the full enumeration"
                            .into(),
                    },
                    Err(e) => none(format!("DirSync failed: {}", err_words(&e))),
                };
            }
            Err((Some(50), _)) => {
                dirsync_words = "the service account lacks the DirSync right (Replicating Directory Changes)".into();
                match dirsync(ldap, cfg, &nc, NOTHING_FILTER, DIRSYNC_FLAGS_OBJECT_SECURITY, Vec::new()).await {
                    Ok(_) => object_security = true,
                    Err((_, e)) => dirsync_words.push_str(&format!(", and DirSync with object security failed: {}", err_words(&e))),
                }
            }
            Err((_, e)) => dirsync_words = format!("DirSync failed: {}", err_words(&e)),
        }
    }
    let deleted = if has_usn { deleted_objects_visible(ldap, cfg, &nc).await } else { Ok(false) };
    let deleted = match deleted {
        Ok(v) => v,
        Err(e) => return none(format!("{dirsync_words}; Deleted Objects could not be checked: {}", err_words(&e))),
    };
    if has_usn && deleted {
        return DeltaSupport {
            method: DeltaMethod::Usn,
            sees_deletions: true,
            reason: format!(
                "USN: {dirsync_words}, but it may read Deleted Objects, so uSNChanged with Deleted Objects sees deletions (a removal from a group is found by the full enumeration)"
            ),
        };
    }
    if object_security {
        return DeltaSupport {
            method: DeltaMethod::Dirsync,
            sees_deletions: false,
            reason: format!(
                "DirSync with object security: {dirsync_words}, so it reads what the account may see; Deleted Objects is not readable by the service account, so deletions are found only by the full enumeration"
            ),
        };
    }
    if has_usn {
        return DeltaSupport {
            method: DeltaMethod::Usn,
            sees_deletions: false,
            reason: format!(
                "USN: {dirsync_words}; Deleted Objects is not readable by the service account, so deletions (and removals from groups) are found only by the full enumeration"
            ),
        };
    }
    none(format!("{dirsync_words}, and the server has no highestCommittedUSN"))
}

fn err_words(e: &DeltaError) -> String {
    match e {
        DeltaError::Failed(f) => f.message.clone(),
        DeltaError::FullRequired(s) => s.clone(),
    }
}

/// Whether a DirSync read from scratch shows the account any tombstone
/// (`CN=Deleted Objects` itself, also `isDeleted`, does not count). It
/// returns every tombstone the account may see, once: for Test connection,
/// not for every run.
async fn dirsync_sees_tombstones(ldap: &mut Ldap, cfg: &DirectoryConfig, nc: &str) -> Result<bool, DeltaError> {
    let container = dn::normalize(&format!("CN=Deleted Objects,{nc}"));
    let (entries, _) = dirsync(ldap, cfg, nc, "(isDeleted=TRUE)", DIRSYNC_FLAGS_REPLICATION, Vec::new()).await.map_err(|(_, e)| e)?;
    Ok(entries.iter().any(|e| dn::normalize(&e.dn) != container))
}

/// Whether the account sees any tombstone in Deleted Objects. (An account
/// that may not list them sees the container and nothing in it; a domain
/// without any deletion yet looks the same, and is reported as not
/// readable — the safe side.)
async fn deleted_objects_visible(ldap: &mut Ldap, cfg: &DirectoryConfig, nc: &str) -> Result<bool, DeltaError> {
    let base = format!("CN=Deleted Objects,{nc}");
    let what = format!("search of {base}");
    let control = RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None };
    let r = ldap
        .with_controls(vec![control])
        .with_search_options(ldap3::SearchOptions::new().sizelimit(1))
        .with_timeout(cfg.op_timeout)
        .search(&base, Scope::OneLevel, "(isDeleted=TRUE)", vec!["objectGUID"])
        .await
        .map_err(|e| failed(e, &what, cfg))?;
    match r.1.rc {
        0 | 4 => Ok(r.0.iter().any(|e| !e.is_ref() && !e.is_intermediate())),
        32 | 50 => Ok(false),
        _ => Err(failed(ldap3::LdapError::LdapResult { result: r.1 }, &what, cfg)),
    }
}

// --- Reading ---------------------------------------------------------------------------------

/// The cookie to store *before* a full enumeration of `ou`, for the method
/// [`detect`] chose: changes made while the enumeration runs are read again
/// by the next delta read (at least once, never lost). The batch has no
/// changes.
pub async fn initial_cookie(cfg: &DirectoryConfig, ou: &str, support: &DeltaSupport) -> Result<DeltaBatch, DeltaError> {
    initial_cookie_on(cfg, None, ou, support).await
}

/// [`initial_cookie`] from `server` (the live stream's: its cookies must
/// come from the server its change notification is open on).
pub async fn initial_cookie_on(
    cfg: &DirectoryConfig,
    server: Option<&str>,
    ou: &str,
    support: &DeltaSupport,
) -> Result<DeltaBatch, DeltaError> {
    let (server, mut ldap) = connect(cfg, server).await?;
    let r = initial_on(&mut ldap, cfg, &server, ou, support).await;
    let _ = ldap.unbind().await;
    r
}

async fn initial_on(
    ldap: &mut Ldap,
    cfg: &DirectoryConfig,
    server: &str,
    ou: &str,
    support: &DeltaSupport,
) -> Result<DeltaBatch, DeltaError> {
    let root = root_dse(ldap, cfg).await?;
    let nc = naming_context(&root, ou)
        .ok_or_else(|| DeltaError::Failed(Failure::answer(format!("{ou} is in none of the server's naming contexts"))))?;
    let mut cookie = Cookie {
        v: 1,
        method: support.method,
        server: server.to_string(),
        nc: nc.clone(),
        ou: dn::normalize(ou),
        issued: now(),
        flags: 0,
        dirsync: String::new(),
        usn: 0,
        invocation: String::new(),
    };
    match support.method {
        DeltaMethod::Dirsync => {
            let flags = if support.sees_deletions { DIRSYNC_FLAGS_REPLICATION } else { DIRSYNC_FLAGS_OBJECT_SECURITY };
            let (_, c) = dirsync(ldap, cfg, &nc, NOTHING_FILTER, flags, Vec::new()).await.map_err(|(_, e)| e)?;
            cookie.flags = flags;
            cookie.dirsync = base64::engine::general_purpose::STANDARD.encode(c);
        }
        DeltaMethod::Usn => {
            cookie.usn = root.highest_usn.ok_or_else(|| DeltaError::Failed(Failure::answer("the root DSE has no highestCommittedUSN")))?;
            cookie.invocation = invocation_id(ldap, cfg, &root).await?;
        }
        DeltaMethod::Syncrepl | DeltaMethod::None => {
            return Err(DeltaError::Failed(Failure::answer(format!("{} is not an Active Directory delta method", support.method.as_str()))))
        }
    }
    Ok(DeltaBatch { search_ou: ou.to_string(), changes: Vec::new(), present: None, cookie: cookie.encode(), server: server.to_string() })
}

/// Read what changed under `ou` since `cookie` (from [`initial_cookie`] or
/// the previous read) on the server that issued it.
pub async fn read_changes(cfg: &DirectoryConfig, ou: &str, cookie: &str) -> Result<DeltaBatch, DeltaError> {
    read_changes_and_groups(cfg, ou, cookie).await.map(|(batch, _)| batch)
}

/// [`read_changes`], with the DNs of the groups whose change a USN read
/// cannot see the removals of (every group with a changed `uSNChanged`;
/// empty for DirSync, which reports removed members itself). The caller
/// knows who was in those groups before and re-reads them with
/// [`reread_users`], so a user removed from a mapped group is demoted.
pub async fn read_changes_and_groups(cfg: &DirectoryConfig, ou: &str, cookie: &str) -> Result<(DeltaBatch, Vec<String>), DeltaError> {
    let c = Cookie::decode(cookie)?;
    if c.ou != dn::normalize(ou) {
        return Err(DeltaError::FullRequired(format!("the cookie belongs to the search OU {}, not {ou}", c.ou)));
    }
    if now().saturating_sub(c.issued) > MAX_COOKIE_AGE.as_secs() {
        return Err(DeltaError::FullRequired(format!(
            "the cookie is older than {} days: deletions since may no longer be visible",
            MAX_COOKIE_AGE.as_secs() / 86400
        )));
    }
    let (server, mut ldap) = connect(cfg, Some(&c.server)).await?;
    let r = match c.method {
        DeltaMethod::Dirsync => read_dirsync(&mut ldap, cfg, ou, c).await.map(|(changes, cookie)| (changes, cookie, Vec::new())),
        DeltaMethod::Usn => read_usn(&mut ldap, cfg, ou, c).await,
        other => Err(DeltaError::FullRequired(format!("the cookie's method {} is not an Active Directory one", other.as_str()))),
    };
    let _ = ldap.unbind().await;
    r.map(|(changes, cookie, groups)| (DeltaBatch { search_ou: ou.to_string(), changes, present: None, cookie, server }, groups))
}

/// Re-read the users `dns` under `ou` on `server` (a cookie's server), as
/// the full enumeration reads them: one `Upsert` each for those still
/// there (users no longer under the OU, or gone, are left out). For the
/// former members of groups a USN read saw change.
pub async fn reread_users(cfg: &DirectoryConfig, server: &str, ou: &str, dns: &[String]) -> Result<Vec<Change>, DeltaError> {
    if dns.is_empty() {
        return Ok(Vec::new());
    }
    let (_, mut ldap) = connect(cfg, Some(server)).await?;
    let found = Found { members: dns.iter().cloned().collect(), ..Default::default() };
    // Only members are read: the naming context (for moved users) is not used.
    let r = reread(&mut ldap, cfg, ou, ou, found).await;
    let _ = ldap.unbind().await;
    r
}

/// What one read found, before re-reading.
#[derive(Default)]
struct Found {
    /// Changed objects (GUID) → moved or created (`parentGUID` in the change).
    changed: BTreeMap<Vec<u8>, bool>,
    /// Members added to or removed from changed groups (DNs).
    members: BTreeSet<String>,
    /// Deleted objects' uids.
    deleted: BTreeSet<String>,
}

async fn read_dirsync(ldap: &mut Ldap, cfg: &DirectoryConfig, ou: &str, mut c: Cookie) -> Result<(Vec<Change>, String), DeltaError> {
    let old = base64::engine::general_purpose::STANDARD
        .decode(&c.dirsync)
        .map_err(|_| DeltaError::FullRequired("the stored DirSync cookie is not base64".into()))?;
    let (entries, next) = match dirsync(ldap, cfg, &c.nc, CHANGED_FILTER, c.flags, old).await {
        Ok(r) => r,
        // 12 unavailable critical extension ("Unable to unmarshall cookie"),
        // 53 unwilling, 2 protocol error: the cookie was refused.
        Err((Some(rc @ (2 | 12 | 53)), e)) => {
            return Err(DeltaError::FullRequired(format!("the server refused the DirSync cookie (LDAP {rc}): {}", err_words(&e))))
        }
        Err((Some(50), e)) => {
            return Err(DeltaError::FullRequired(format!("the service account may no longer use DirSync as before: {}", err_words(&e))))
        }
        Err((_, e)) => return Err(e),
    };
    let mut found = Found::default();
    for e in &entries {
        let Some(guid) = guid_bytes(e) else { continue };
        // A tombstone; with object security some servers send a deleted
        // object as its objectGUID under an empty DN.
        if first(e, "isDeleted").is_some_and(|v| v.eq_ignore_ascii_case("TRUE")) || e.dn.is_empty() {
            found.deleted.insert(hex(&guid));
            continue;
        }
        let mut is_group_change = false;
        for (attr, values) in &e.attrs {
            let name = attr.split(';').next().unwrap_or("");
            if name.eq_ignore_ascii_case("member") {
                is_group_change = true;
                found.members.extend(values.iter().cloned());
            }
        }
        let moved = e.bin_attrs.keys().chain(e.attrs.keys()).any(|k| k.eq_ignore_ascii_case("parentGUID"));
        let entry = found.changed.entry(guid).or_insert(false);
        *entry |= moved && !is_group_change;
    }
    let changes = reread(ldap, cfg, ou, &c.nc, found).await?;
    c.dirsync = base64::engine::general_purpose::STANDARD.encode(next);
    c.issued = now();
    Ok((changes, c.encode()))
}

async fn read_usn(
    ldap: &mut Ldap,
    cfg: &DirectoryConfig,
    ou: &str,
    mut c: Cookie,
) -> Result<(Vec<Change>, String, Vec<String>), DeltaError> {
    let root = root_dse(ldap, cfg).await?;
    let invocation = invocation_id(ldap, cfg, &root).await?;
    if invocation != c.invocation {
        return Err(DeltaError::FullRequired(
            "the domain controller's invocation id changed (restored from backup or reinstalled): USNs are no longer comparable".into(),
        ));
    }
    // Read before searching: a change made during the read is read again next time.
    let highest = root.highest_usn.ok_or_else(|| DeltaError::Failed(Failure::answer("the root DSE has no highestCommittedUSN")))?;
    if highest < c.usn {
        return Err(DeltaError::FullRequired(format!("the server's highest USN {highest} is below the stored {}", c.usn)));
    }
    let since = c.usn + 1;
    let mut found = Found::default();
    // Changed users under the OU.
    let users = format!("(&{}(uSNChanged>={since}))", all_users_filter(cfg));
    for e in paged(ldap, cfg, ou, Scope::Subtree, &users, vec!["objectGUID".into()], None).await? {
        if let Some(g) = guid_bytes(&e) {
            found.changed.insert(g, false);
        }
    }
    // Changed groups anywhere in the domain: their current members
    // (memberOf is a back-link; the user's uSNChanged does not move).
    let groups = format!("(&(objectClass=group)(uSNChanged>={since}))");
    let mut changed_groups = Vec::new();
    for e in paged(ldap, cfg, &c.nc, Scope::Subtree, &groups, vec!["member".into()], None).await? {
        changed_groups.push(e.dn.clone());
        for (attr, values) in &e.attrs {
            if attr.split(';').next().unwrap_or("").eq_ignore_ascii_case("member") {
                found.members.extend(values.iter().cloned());
            }
        }
    }
    // Tombstones, when the account may read them.
    let base = format!("CN=Deleted Objects,{}", c.nc);
    let show = RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None };
    let tomb = format!("(&(isDeleted=TRUE)(uSNChanged>={since}))");
    match paged(ldap, cfg, &base, Scope::OneLevel, &tomb, vec!["objectGUID".into()], Some(show)).await {
        Ok(entries) => found.deleted.extend(entries.iter().filter_map(guid_bytes).map(|g| hex(&g))),
        Err(DeltaError::Failed(f)) if matches!(f.ldap_code, Some(32 | 50)) => {}
        Err(e) => return Err(e),
    }
    let changes = reread(ldap, cfg, ou, &c.nc, found).await?;
    c.usn = highest;
    c.issued = now();
    Ok((changes, c.encode(), changed_groups))
}

/// A complete paged search (an `Err` unless every page was read).
async fn paged(
    ldap: &mut Ldap,
    cfg: &DirectoryConfig,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: Vec<String>,
    extra: Option<RawControl>,
) -> Result<Vec<SearchEntry>, DeltaError> {
    use ldap3::controls::{Control, ControlType, PagedResults};
    let mut out = Vec::new();
    let mut cookie: Vec<u8> = Vec::new();
    let mut last_page: Option<u64> = None;
    for page in 0..cfg.max_pages.max(1) {
        let mut controls: Vec<RawControl> = vec![PagedResults { size: cfg.page_size, cookie: cookie.clone() }.into()];
        controls.extend(extra.clone());
        let what = format!("search of {base} (page {})", page + 1);
        let r = ldap
            .with_controls(controls)
            .with_timeout(cfg.op_timeout)
            .search(base, scope, filter, attrs.clone())
            .await
            .map_err(|e| failed(e, &what, cfg))?;
        let (raw, result) = (r.0, r.1);
        let next = result.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => Some(raw.parse::<PagedResults>().cookie),
            _ => None,
        });
        crate::check(result, &what).map_err(DeltaError::Failed)?;
        let entries: Vec<SearchEntry> =
            raw.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).map(SearchEntry::construct).collect();
        let this_page = crate::page_fingerprint(entries.iter().map(|e| e.dn.as_str()));
        out.extend(entries);
        match next {
            // Samba sends one cookie for every page: stuck only if the page repeats too.
            Some(c) if !c.is_empty() && (c != cookie || last_page != Some(this_page)) => {
                cookie = c;
                last_page = Some(this_page);
            }
            Some(c) if !c.is_empty() => {
                return Err(DeltaError::Failed(Failure::answer(format!("{what}: the server repeated its paging cookie: incomplete"))))
            }
            Some(_) => return Ok(out),
            None => {
                return Err(DeltaError::Failed(Failure::answer(format!(
                    "{what}: the server ignored the paged-results control: the result may be truncated"
                ))))
            }
        }
    }
    Err(DeltaError::Failed(Failure::answer(format!("search of {base} still not finished after {} pages: incomplete", cfg.max_pages))))
}

/// Re-read what `found` names, under `ou`, as the full enumeration reads
/// users; deletions last.
async fn reread(ldap: &mut Ldap, cfg: &DirectoryConfig, ou: &str, nc: &str, found: Found) -> Result<Vec<Change>, DeltaError> {
    let users = all_users_filter(cfg);
    let mut attrs = cfg.attr_map.attributes();
    attrs.extend(crate::authn::STATE_ATTRS.iter().map(|s| s.to_string()));
    let mut seen: HashSet<String> = HashSet::new();
    let mut upserts: Vec<SearchEntry> = Vec::new();
    let guids: Vec<&Vec<u8>> = found.changed.keys().collect();
    for chunk in guids.chunks(CHUNK) {
        let ors: String = chunk.iter().map(|g| guid_filter(g)).collect();
        let filter = format!("(&{users}(|{ors}))");
        for e in paged(ldap, cfg, ou, Scope::Subtree, &filter, attrs.clone(), None).await? {
            if seen.insert(uid_of(&e)) {
                upserts.push(e);
            }
        }
    }
    // Members of changed groups: the users named, and (nested groups) the
    // users in a named group's subtree of memberships.
    let members: Vec<&String> = found.members.iter().collect();
    for chunk in members.chunks(CHUNK) {
        let mut ors = String::new();
        for m in chunk {
            let v = ldap3::ldap_escape(m.as_str());
            ors.push_str(&format!("(distinguishedName={v})"));
            if cfg.nested_groups {
                ors.push_str(&format!("(memberOf:1.2.840.113556.1.4.1941:={v})"));
            }
        }
        let filter = format!("(&{users}(|{ors}))");
        for e in paged(ldap, cfg, ou, Scope::Subtree, &filter, attrs.clone(), None).await? {
            if seen.insert(uid_of(&e)) {
                upserts.push(e);
            }
        }
    }
    // Users that moved or were renamed and are now outside the OU.
    let mut gone: Vec<String> = Vec::new();
    let moved: Vec<&Vec<u8>> = found.changed.iter().filter(|(g, moved)| **moved && !seen.contains(&hex(g))).map(|(g, _)| g).collect();
    for chunk in moved.chunks(CHUNK) {
        let ors: String = chunk.iter().map(|g| guid_filter(g)).collect();
        let filter = format!("(&{users}(|{ors}))");
        for e in paged(ldap, cfg, nc, Scope::Subtree, &filter, vec!["objectGUID".into()], None).await? {
            if !under(&e.dn, ou) {
                gone.push(uid_of(&e));
            }
        }
    }
    let mut changes = Vec::with_capacity(upserts.len() + gone.len() + found.deleted.len());
    let mut groups = if crate::groups::GroupIndex::needed(cfg) && !upserts.is_empty() {
        Some(crate::groups::GroupIndex::load(ldap, cfg).await.map_err(DeltaError::Failed)?)
    } else {
        None
    };
    for e in upserts {
        let mut user = map_entry(&e, &cfg.attr_map);
        let state = crate::authn::entry_state(&e, &user);
        if let Some(index) = groups.as_mut() {
            user.groups = index.groups_of(ldap, cfg, &user.dn, &user.username, &user.groups).await.map_err(DeltaError::Failed)?;
        }
        changes.push(Change::Upsert(Entry { uid: uid_of(&e), user, state }));
    }
    changes.extend(gone.into_iter().map(|uid| Change::Delete { uid }));
    changes.extend(found.deleted.into_iter().filter(|uid| !seen.contains(uid)).map(|uid| Change::Delete { uid }));
    Ok(changes)
}

// --- Change notification ---------------------------------------------------------------------

/// The change-notification control ([MS-ADTS] 3.1.1.3.4.1.9): a search
/// that stays open and returns each object as it changes.
pub const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";

/// An open change-notification search on one server: the live stream's
/// trigger. It says *that* an object changed (its DN), not how; the caller
/// answers a notification with [`read_changes`], which reads the change
/// as a delta run does (one place decides what a change means). An
/// ordinary account may open one (measured against Samba: a disable was
/// notified 40–140 ms after it was made). What is notified is limited by
/// what the account may read (a deletion lives in Deleted Objects), and a
/// lost connection loses notifications: the caller still polls
/// [`read_changes`] on a timer and after every reconnect.
pub struct ChangeNotifier {
    stream: ldap3::SearchStream<'static, String, Vec<String>>,
    server: String,
}

/// Open a change-notification search of the naming context holding `ou`
/// (AD accepts a subtree notification only at a naming context's root), on
/// `server` if given (the server a cookie belongs to), else the first that
/// answers. With `show_deleted` the show-deleted control goes along: a
/// deletion moves the object to Deleted Objects, and is notified (measured
/// against Samba 4.17) only with that control and only to an account that
/// may read Deleted Objects; without it, or to an ordinary account, a
/// deletion is not notified at all (a disable is, to any account).
/// Connect, bind and the request itself run within the configured timeouts.
pub async fn notifications(
    cfg: &DirectoryConfig,
    ou: &str,
    server: Option<&str>,
    show_deleted: bool,
) -> Result<ChangeNotifier, DeltaError> {
    let (server, mut ldap) = connect(cfg, server).await?;
    let root = root_dse(&mut ldap, cfg).await?;
    if !root.controls.iter().any(|c| c == NOTIFICATION_OID) {
        let _ = ldap.unbind().await;
        return Err(DeltaError::Failed(Failure::answer("the server does not offer the change-notification control")));
    }
    let nc = naming_context(&root, ou)
        .ok_or_else(|| DeltaError::Failed(Failure::answer(format!("{ou} is in none of the server's naming contexts"))))?;
    let mut controls = vec![RawControl { ctype: NOTIFICATION_OID.into(), crit: true, val: None }];
    if show_deleted {
        controls.push(RawControl { ctype: SHOW_DELETED_OID.into(), crit: true, val: None });
    }
    let what = format!("change notification on {nc}");
    // No timeout on the stream itself: it is meant to wait. `next` bounds each wait.
    let started = tokio::time::timeout(
        cfg.op_timeout,
        ldap.with_controls(controls).streaming_search(&nc, Scope::Subtree, "(objectClass=*)", vec!["objectGUID".to_string()]),
    )
    .await;
    match started {
        Err(_) => Err(DeltaError::Failed(Failure::timeout(format!("{what}: no answer within {} s", cfg.op_timeout.as_secs().max(1))))),
        Ok(Err(e)) => Err(failed(e, &what, cfg)),
        Ok(Ok(stream)) => Ok(ChangeNotifier { stream, server }),
    }
}

impl ChangeNotifier {
    /// The server the search is open on.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The DN of the next object that changes within `wait`: `Ok(None)` if
    /// none did (the search is still open), `Err` if the server ended it or
    /// the connection was lost (reconnect, then read the changes missed with
    /// [`read_changes`]).
    pub async fn next(&mut self, wait: Duration) -> Result<Option<String>, Failure> {
        loop {
            match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(Ok(Some(e))) if e.is_ref() || e.is_intermediate() => continue,
                Ok(Ok(Some(e))) => return Ok(Some(SearchEntry::construct(e).dn)),
                Ok(Ok(None)) => {
                    let r = self.stream.finish().await;
                    let mut f = Failure::unreachable(format!(
                        "change notification ended by {}: {} (LDAP {})",
                        self.server,
                        crate::result_code_words(r.rc),
                        r.rc
                    ));
                    f.ldap_code = Some(r.rc);
                    // The server refused the search itself (Windows does for
                    // a base other than a naming context's root, or when its
                    // limit of notification searches is reached): reconnecting
                    // would be refused again.
                    f.unreachable = !matches!(r.rc, 2 | 11 | 12 | 50 | 53);
                    return Err(f);
                }
                Ok(Err(e)) => return Err(Failure::from_ldap(e, "change notification", wait)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirsync_request_is_encoded_as_ad_expects() {
        // As OpenLDAP's ldapsearch -E dirSync=... encodes it.
        assert_eq!(encode_dirsync(0, 0, b""), vec![0x30, 0x08, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x00]);
        assert_eq!(
            encode_dirsync(DIRSYNC_FLAGS_OBJECT_SECURITY, 0, b"ab"),
            vec![0x30, 0x0d, 0x02, 0x04, 0x80, 0x00, 0x20, 0x01, 0x02, 0x01, 0x00, 0x04, 0x02, b'a', b'b']
        );
        assert_eq!(ber_int(0x2001), vec![0x20, 0x01]);
        assert_eq!(ber_int(0x80), vec![0x00, 0x80]);
        assert_eq!(ber_int(-1), vec![0xff]);
        // Long cookies use the long length form.
        let long = vec![7u8; 300];
        let v = encode_dirsync(1, 0, &long);
        assert_eq!(&v[..4], &[0x30, 0x82, 0x01, 0x36]);
        let (tag, seq, rest) = ber_read(&v).unwrap();
        assert_eq!((tag, seq.len(), rest.len()), (0x30, 310, 0));
    }

    #[test]
    fn dirsync_response_is_decoded() {
        // A response Samba sent (moreResults 0, cookie "MSDS…").
        let v = base64::engine::general_purpose::STANDARD
            .decode("MHQCAQACAQAEbE1TRFMDAAAAAJeCLIWC3QEAAAAAAAAAACgAAACXDwAAAAAAAAAAAAAAAAAAlw8AAAAAAADqcooC01JoSo5uO4jZa4BKAQAAAAAAAAABAAAAAAAAAOpyigLTUmhKjm47iNlrgEqXDwAAAAAAAA==")
            .unwrap();
        let (more, cookie) = decode_dirsync(&v).unwrap();
        assert!(!more);
        assert_eq!(cookie.len(), 0x6c);
        assert!(cookie.starts_with(b"MSDS"));
        // Our own encoding round-trips (same structure), and "more" is read.
        let (more, cookie) = decode_dirsync(&encode_dirsync(1, 0, b"xyz")).unwrap();
        assert!(more);
        assert_eq!(cookie, b"xyz");
        for bad in [&b""[..], &[0x30, 0x05, 0x02], &[0x04, 0x00], &[0x30, 0x03, 0x02, 0x01, 0x00]] {
            assert_eq!(decode_dirsync(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cookies_round_trip_and_garbage_needs_a_full_run() {
        let c = Cookie {
            v: 1,
            method: DeltaMethod::Usn,
            server: "ldap://dc1:389".into(),
            nc: "dc=example,dc=com".into(),
            ou: "ou=people,dc=example,dc=com".into(),
            issued: 1,
            flags: 0,
            dirsync: String::new(),
            usn: 42,
            invocation: "ab".into(),
        };
        assert_eq!(Cookie::decode(&c.encode()).unwrap(), c);
        for bad in ["", "garbage", "{}", r#"{"v":2,"method":"usn","server":"","nc":"","ou":"","issued":0}"#] {
            assert!(matches!(Cookie::decode(bad), Err(DeltaError::FullRequired(_))), "{bad}");
        }
    }

    #[test]
    fn guid_filters_escape_every_byte() {
        assert_eq!(guid_filter(&[0x00, 0x2a, 0xff]), "(objectGUID=\\00\\2a\\ff)");
        assert!(ldap3::parse_filter(guid_filter(&[0x28, 0x29, 0x5c, 0x2a])).is_ok());
        assert!(ldap3::parse_filter(NOTHING_FILTER).is_ok());
        assert!(under("CN=a,OU=People,DC=x", "ou=people,dc=x"));
        assert!(!under("CN=a,OU=PeopleX,DC=x", "ou=people,dc=x"));
    }
}
