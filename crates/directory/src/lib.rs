//! Bindery's LDAP / Active Directory client.
//!
//! * [`config`] turns what an administrator typed into a checked
//!   [`DirectoryConfig`], naming every invalid field.
//! * [`conn`] opens a connection — TCP, TLS or StartTLS — within one connect
//!   timeout, verifying the certificate chain and host name unless the
//!   administrator explicitly chose not to, and records the certificate seen.
//! * [`probe`] is "Test connection": ordered, timed steps per server.
//! * [`authn`] finds a user (exactly one entry inside the search OUs) and
//!   binds as them; "Test login" reports every fact it learned.
//!
//! Every network operation has a timeout; referrals are never followed
//! (ldap3 does not chase them and we drop referral results).

pub mod ad;
pub mod ad_delta;
pub mod ad_live;
pub mod authn;
pub mod config;
pub mod conn;
pub mod delta;
pub mod dn;
pub mod enumerate;
pub mod gateway;
pub mod groups;
pub mod live;
pub mod probe;
pub mod syncrepl;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{AttrMap, DirectoryConfig, Secret};

/// A directory operation that failed, in plain words, with the LDAP result
/// code and (Active Directory) bind sub-code when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub ldap_code: Option<u32>,
    pub ad_subcode: Option<String>,
    /// True when the server could not be reached at all (connection refused,
    /// timed out, TLS failed): the next server, or LDAP HA, may be tried.
    /// False for answers from a live server (bad password, no such user).
    pub unreachable: bool,
    /// True when the server did not answer in time (as opposed to refusing
    /// or closing the connection): retrying would cost another timeout.
    pub timed_out: bool,
}

impl Failure {
    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), ldap_code: None, ad_subcode: None, unreachable: true, timed_out: false }
    }

    /// Unreachable because nothing answered within the time allowed.
    pub fn timeout(message: impl Into<String>) -> Failure {
        Failure { timed_out: true, ..Failure::unreachable(message) }
    }

    pub fn answer(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), ldap_code: None, ad_subcode: None, unreachable: false, timed_out: false }
    }

    /// From an ldap3 error, for operation `what` (e.g. "service bind").
    pub fn from_ldap(e: ldap3::LdapError, what: &str, timeout: std::time::Duration) -> Failure {
        use ldap3::LdapError;
        match e {
            LdapError::LdapResult { result } => {
                let ad_subcode = ad::bind_subcode(&result.text);
                let mut message = format!("{what}: {} (LDAP {})", result_code_words(result.rc), result.rc);
                if let Some(code) = &ad_subcode {
                    message = format!("{what}: {} (LDAP {}, AD {code})", ad::subcode_words(code), result.rc);
                } else if !result.text.trim().is_empty() {
                    message.push_str(&format!(": {}", result.text.trim()));
                }
                Failure { message, ldap_code: Some(result.rc), ad_subcode, unreachable: false, timed_out: false }
            }
            LdapError::Timeout { .. } => Failure::timeout(format!("{what}: no answer within {} s", timeout.as_secs().max(1))),
            other => Failure::unreachable(format!("{what}: connection lost ({other})")),
        }
    }
}

/// RFC 4511 Appendix A result codes, in words.
pub fn result_code_words(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        7 => "authentication method not supported",
        8 => "stronger authentication required",
        10 => "referral (not followed)",
        11 => "administrative limit exceeded",
        13 => "confidentiality required (use TLS)",
        16 => "no such attribute",
        19 => "constraint violation",
        21 => "invalid attribute syntax",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "server busy",
        52 => "server unavailable",
        53 => "unwilling to perform",
        54 => "loop detected",
        80 => "other error",
        _ => "error",
    }
}

/// Check an operation's result: `Ok` for success, else a [`Failure`].
pub fn check(result: ldap3::LdapResult, what: &str) -> Result<ldap3::LdapResult, Failure> {
    match result.rc {
        0 => Ok(result),
        _ => Err(Failure::from_ldap(ldap3::LdapError::LdapResult { result }, what, std::time::Duration::ZERO)),
    }
}

/// One page of a paged search of the subtree under `base` (one operation,
/// within the operation timeout): its entries, without references and
/// intermediate answers, and the cookie the server answered with (`None`:
/// it ignored the paged-results control). `what` names the search in a
/// failure.
pub(crate) async fn search_page<S: AsRef<str> + Clone + Send + Sync>(
    ldap: &mut ldap3::Ldap,
    cfg: &DirectoryConfig,
    base: &str,
    filter: &str,
    attrs: &[S],
    cookie: &[u8],
    what: &str,
) -> Result<(Vec<ldap3::ResultEntry>, Option<Vec<u8>>), Failure> {
    use ldap3::controls::{Control, ControlType, PagedResults};
    let control: ldap3::controls::RawControl = PagedResults { size: cfg.page_size, cookie: cookie.to_vec() }.into();
    let r = ldap
        .with_controls(vec![control])
        .with_timeout(cfg.op_timeout)
        .search(base, ldap3::Scope::Subtree, filter, attrs.to_vec())
        .await
        .map_err(|e| Failure::from_ldap(e, what, cfg.op_timeout))?;
    let (raw, result) = (r.0, r.1);
    let next = result.ctrls.iter().find_map(|c| match c {
        Control(Some(ControlType::PagedResults), raw) => Some(raw.parse::<PagedResults>().cookie),
        _ => None,
    });
    check(result, what)?;
    Ok((raw.into_iter().filter(|e| !e.is_ref() && !e.is_intermediate()).collect(), next))
}

/// A fingerprint of one page of search results (its entries' DNs). A server
/// may send one unchanging paging cookie (Samba's names the search, not the
/// position), so a repeated cookie means "stuck" only together with a
/// repeated page.
pub(crate) fn page_fingerprint<'a>(dns: impl Iterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut n = 0u64;
    for dn in dns {
        dn.hash(&mut h);
        n += 1;
    }
    n.hash(&mut h);
    h.finish()
}

/// Put a username into a search filter template, escaped per RFC 4515 so
/// that `*`, `(`, `)`, `\` and NUL are data, never filter syntax.
pub fn user_filter(template: &str, username: &str) -> String {
    template.replace("%(user)s", &ldap3::ldap_escape(username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_input_is_escaped_in_filters() {
        assert_eq!(user_filter("(uid=%(user)s)", "jdoe"), "(uid=jdoe)");
        assert_eq!(user_filter("(uid=%(user)s)", "*"), "(uid=\\2a)");
        assert_eq!(user_filter("(uid=%(user)s)", "admin)(uid=*"), "(uid=admin\\29\\28uid=\\2a)");
        assert_eq!(user_filter("(uid=%(user)s)", "a\\29"), "(uid=a\\5c29)");
        assert_eq!(user_filter("(uid=%(user)s)", "a\0b"), "(uid=a\\00b)");
        assert_eq!(user_filter("(|(uid=%(user)s)(mail=%(user)s))", "é"), "(|(uid=é)(mail=é))");
        // Every escaped filter still parses as one filter.
        for hostile in ["*", "admin)(uid=*", "a\\29", "x".repeat(300).as_str(), "Ünïcødé", "(", ")", "\\"] {
            assert!(ldap3::parse_filter(user_filter("(uid=%(user)s)", hostile)).is_ok(), "{hostile}");
        }
    }

    #[test]
    fn ldap_errors_become_plain_words() {
        let e = ldap3::LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc: 49,
                matched: String::new(),
                text: "80090308: LdapErr: DSID-0C090447, comment: AcceptSecurityContext error, data 775, v3839".into(),
                refs: vec![],
                ctrls: vec![],
            },
        };
        let f = Failure::from_ldap(e, "bind", std::time::Duration::from_secs(5));
        assert_eq!(f.ldap_code, Some(49));
        assert_eq!(f.ad_subcode.as_deref(), Some("775"));
        assert_eq!(f.message, "bind: account locked out (LDAP 49, AD 775)");
        assert!(!f.unreachable);
    }
}
