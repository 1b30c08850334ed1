//! Clock, randomness and password hashing.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::{distributions::Alphanumeric, Rng, RngCore};
use sha2::{Digest, Sha256};

use crate::{Error, Result, Secret};

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// RFC 3339 in UTC, second precision, e.g. `2026-11-23T10:17:00Z`.
pub fn fmt_ts(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_default()
}

/// Argon2id with the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Argon2 is deliberately slow (tens of milliseconds of one core per
/// hash): run inline on the async runtime, a burst of local sign-ins
/// stalled every other request, pages and health checks alike. It runs on
/// the blocking pool instead, at most one hash per CPU at a time; the rest
/// wait their turn without holding a runtime thread.
fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)))
}

/// Run an Argon2 job on the blocking pool, in its turn (see [`argon2_slots`]).
async fn argon2_job<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _slot = argon2_slots().acquire().await.map_err(|e| Error::Internal(format!("password hashing unavailable: {e}")))?;
    tokio::task::spawn_blocking(job).await.map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

/// [`verify_password`] on the blocking pool. A job that could not run
/// verifies nothing (`false`).
pub async fn verify_password_async(password: &str, hash: &str) -> bool {
    let (password, hash) = (Secret::new(password.to_string()), hash.to_string());
    argon2_job(move || verify_password(password.expose(), &hash)).await.unwrap_or(false)
}

/// [`verify_password`] against [`dummy_hash`], on the blocking pool: an
/// unknown user costs the same work as a wrong password.
pub async fn verify_dummy_async(password: &str) {
    let password = Secret::new(password.to_string());
    let _ = argon2_job(move || verify_password(password.expose(), dummy_hash())).await;
}

/// [`hash_password`] on the blocking pool.
pub async fn hash_password_async(password: &str) -> Result<String> {
    let password = Secret::new(password.to_string());
    argon2_job(move || hash_password(password.expose())).await?
}

/// A hash to verify against when the user does not exist, so an unknown
/// username costs the same Argon2 work as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default())
}

/// 20 alphanumeric characters (~119 bits): one-time passwords.
pub fn random_password() -> Secret {
    Secret::new(rand::thread_rng().sample_iter(&Alphanumeric).take(20).map(char::from).collect::<String>())
}

/// 32 random bytes, hex: session cookies and API token secrets.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Tokens are stored as SHA-256: they are high-entropy, so a fast hash
/// suffices and a database leak yields nothing usable.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Usernames compare case-insensitively, Unicode-aware.
/// One CSV field (RFC 4180), safe to open in a spreadsheet: a value that
/// starts like a formula is prefixed with `'`.
pub fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{v}") } else { v.to_string() };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// The key a username is compared and stored under: trimmed, Unicode NFC
/// (so the precomposed and the decomposed spelling of `é` are one name),
/// then lowercased (Unicode-aware) and normalised again.
pub fn username_key(username: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let trimmed = username.trim();
    // ASCII is its own NFC form, and lowercases to ASCII: most directories'
    // names, and one enumeration computes 100,000 keys.
    if trimmed.is_ascii() {
        return trimmed.to_ascii_lowercase();
    }
    let nfc: String = trimmed.nfc().collect();
    nfc.to_lowercase().nfc().collect()
}

/// A name as it may go into a log line or the login log: control
/// characters (CR, LF, TAB, ESC, …) escaped, so no one can forge a line.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("Correct horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(fmt_ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_ts(1_795_000_000_123), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn username_keys_fold_unicode_case() {
        assert_eq!(username_key(" ÉLODIE "), "élodie");
        assert_eq!(username_key("Straße"), username_key("STRAßE"));
    }

    #[test]
    fn ascii_usernames_take_a_short_path_to_the_same_key() {
        use unicode_normalization::UnicodeNormalization;
        for name in ["  JDoe ", "user012345", "Mc-O'Neil_2", "A.B@C", "\tTab\n", ""] {
            let full: String = name.trim().nfc().collect::<String>().to_lowercase().nfc().collect();
            assert_eq!(username_key(name), full, "{name:?}");
        }
    }

    #[test]
    fn username_keys_are_nfc() {
        let nfc = "\u{e9}lodie";
        let nfd = "e\u{301}lodie";
        assert_ne!(nfc, nfd);
        assert_eq!(username_key(nfc), username_key(nfd));
        assert_eq!(username_key("E\u{301}LODIE"), "\u{e9}lodie");
        assert_eq!(username_key(&username_key(nfd)), username_key(nfd), "idempotent");
    }

    #[test]
    fn control_characters_are_escaped_for_logs() {
        assert_eq!(printable("eve\nINFO forged line\t\u{1b}[31m"), "eve\\nINFO forged line\\t\\u{1b}[31m");
        assert_eq!(printable("Élodie"), "Élodie");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
