//! Start-up checks of what the database holds: the key that encrypts its
//! secrets (one key per database), and username keys under today's rule.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::SecretKey;
use crate::{util, Error, Result, Service};

/// The settings row holding the key check value.
const KEY_CHECK: &str = "secret_key_check";
/// The settings row recording the username key rule the keys follow.
const USERNAME_KEYS: &str = "username_key_rule";
const USERNAME_KEY_RULE: &str = "nfc-lowercase-1";

impl SecretKey {
    /// HMAC-SHA256 of a constant under the key, hex: proves which key a
    /// database was set up with, without revealing it.
    pub fn check_value(&self) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes()).expect("HMAC takes any key length");
        mac.update(b"bindery secret key check v1");
        hex::encode(mac.finalize().into_bytes())
    }

    /// A short name for the key (the first 16 hex digits of its check value).
    pub fn fingerprint(&self) -> String {
        self.check_value()[..16].to_string()
    }
}

impl Service {
    /// One key per database. The first server to start records the check
    /// value of its key; every later start (any replica) must have the same
    /// key, or it refuses to start, naming both fingerprints. A database
    /// from before the check whose stored secrets do not decrypt under this
    /// key is refused as well, rather than recorded under the wrong key.
    pub async fn check_secret_key(&self) -> Result<()> {
        let key = &self.options.secret_key;
        let mine = key.check_value();
        let stored = match self.store.get_setting(KEY_CHECK).await? {
            Some(v) => v,
            None => {
                for kind in [bindery_model::DirectoryKind::Ldap, bindery_model::DirectoryKind::LdapHa] {
                    if self.load_directory(kind).await.is_err() {
                        return Err(Error::Conflict(format!(
                            "the stored secrets of directory {} cannot be decrypted with this server's secret key (fingerprint {}): \
                             start it with the key the database was set up with. Every replica sharing a database needs the same \
                             `secret_key` (or the same secret_key_file)",
                            kind.as_str(),
                            key.fingerprint()
                        )));
                    }
                }
                self.store.setting_or_insert(KEY_CHECK, &mine, util::now_ms()).await?
            }
        };
        if stored != mine {
            return Err(Error::Conflict(format!(
                "this server's secret key (fingerprint {}) is not the key of this database (fingerprint {}): every replica \
                 sharing a database needs the same `secret_key` (config `secret_key` / env BINDERY_SECRET_KEY, or the same \
                 secret_key_file); copy the key of the replica that set the database up",
                key.fingerprint(),
                stored.get(..16).unwrap_or(&stored)
            )));
        }
        Ok(())
    }

    /// Username keys written under an older rule (before NFC) are rewritten:
    /// users, staged import rows and lockout counters (`user:<key>`). Two
    /// accounts whose names become one are left as they are and reported:
    /// an administrator renames one of them.
    pub async fn migrate_username_keys(&self) -> Result<()> {
        if self.store.get_setting(USERNAME_KEYS).await?.as_deref() == Some(USERNAME_KEY_RULE) {
            return Ok(());
        }
        let mut clashes = 0;
        let mut changed = 0;
        for (id, username, old) in self.store.username_keys().await? {
            let key = util::username_key(&username);
            if key != old {
                if self.store.set_username_key(id, &key).await? {
                    changed += 1;
                } else {
                    clashes += 1;
                    tracing::warn!(
                        user_id = id,
                        username = %util::printable(&username),
                        "two accounts have the same username once normalised (NFC): rename one of them"
                    );
                }
            }
        }
        for (id, username, old) in self.store.staged_username_keys().await? {
            let key = util::username_key(&username);
            if key != old {
                self.store.set_staged_username_key(id, &key).await?;
            }
        }
        for old in self.store.failure_keys("user:").await? {
            let key = format!("user:{}", util::username_key(&old["user:".len()..]));
            if key != old {
                self.store.rename_failure_key(&old, &key).await?;
            }
        }
        if changed > 0 {
            tracing::info!(users = changed, "username keys rewritten under the NFC rule");
        }
        if clashes == 0 {
            self.store.put_setting(USERNAME_KEYS, USERNAME_KEY_RULE, util::now_ms()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_tell_keys_apart_without_revealing_them() {
        let a = SecretKey::new([1; 32]);
        assert_eq!(a.check_value(), SecretKey::new([1; 32]).check_value());
        assert_ne!(a.check_value(), SecretKey::new([2; 32]).check_value());
        assert!(!a.check_value().contains(&a.to_hex()));
        assert_eq!(a.fingerprint().len(), 16);
    }
}
