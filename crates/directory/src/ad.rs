//! Active Directory specifics: bind sub-codes and `userAccountControl`.
//!
//! AD answers a failed bind with result 49 and a diagnostic such as
//! `80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error,
//! data 52e, v3839`; the hex after `data` says *why*.

use bindery_model::AccountState;

/// `userAccountControl` bit: the account is disabled.
pub const UAC_ACCOUNTDISABLE: i64 = 0x2;
/// `userAccountControl` bit: the account is locked out.
pub const UAC_LOCKOUT: i64 = 0x10;
/// `userAccountControl` bit: the password has expired.
pub const UAC_PASSWORD_EXPIRED: i64 = 0x80_0000;

/// The sub-code of an AD bind diagnostic (`data 52e,` → `52e`).
pub fn bind_subcode(text: &str) -> Option<String> {
    let i = text.find("data ")?;
    let code: String = text[i + 5..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (!code.is_empty()).then(|| code.to_ascii_lowercase())
}

pub fn subcode_words(code: &str) -> &'static str {
    match code {
        "525" => "user not found",
        "52e" => "invalid credentials",
        "530" => "not permitted to log on at this time",
        "531" => "not permitted to log on at this workstation",
        "532" => "password expired",
        "533" => "account disabled",
        "568" => "too many security IDs",
        "701" => "account expired",
        "773" => "user must reset password",
        "775" => "account locked out",
        _ => "invalid credentials",
    }
}

/// The account state a bind sub-code reveals, if any.
pub fn subcode_state(code: &str) -> Option<AccountState> {
    match code {
        "533" => Some(AccountState::Disabled),
        "775" => Some(AccountState::Locked),
        "532" | "701" => Some(AccountState::Expired),
        "773" => Some(AccountState::MustChangePassword),
        _ => None,
    }
}

/// The account state `userAccountControl` reveals, if not `active`.
pub fn uac_state(uac: i64) -> Option<AccountState> {
    if uac & UAC_ACCOUNTDISABLE != 0 {
        Some(AccountState::Disabled)
    } else if uac & UAC_LOCKOUT != 0 {
        Some(AccountState::Locked)
    } else if uac & UAC_PASSWORD_EXPIRED != 0 {
        Some(AccountState::Expired)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcodes() {
        let t = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 52e, v3839";
        assert_eq!(bind_subcode(t).as_deref(), Some("52e"));
        assert_eq!(bind_subcode("invalid credentials"), None);
        for (code, words) in [
            ("525", "user not found"),
            ("530", "not permitted to log on at this time"),
            ("531", "not permitted to log on at this workstation"),
            ("532", "password expired"),
            ("533", "account disabled"),
            ("701", "account expired"),
            ("773", "user must reset password"),
            ("775", "account locked out"),
        ] {
            assert_eq!(subcode_words(code), words);
        }
    }

    #[test]
    fn uac_bits() {
        assert_eq!(uac_state(512), None);
        assert_eq!(uac_state(514), Some(AccountState::Disabled));
        assert_eq!(uac_state(512 | 0x10), Some(AccountState::Locked));
        assert_eq!(uac_state(512 | 0x80_0000), Some(AccountState::Expired));
    }
}
