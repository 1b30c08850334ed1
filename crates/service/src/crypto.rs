//! Encryption of stored secrets (directory bind passwords, client keys)
//! with ChaCha20-Poly1305 under the server's key. The kind of secret is
//! bound in as associated data, so a ciphertext cannot be moved to another
//! column or directory and still decrypt.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::{Error, Result};

/// The 32-byte key that encrypts secrets at rest. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn new(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    pub fn generate() -> SecretKey {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        SecretKey(k)
    }

    /// From 64 hex characters.
    pub fn from_hex(s: &str) -> Option<SecretKey> {
        let bytes = hex::decode(s.trim()).ok()?;
        Some(SecretKey(bytes.try_into().ok()?))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `hex(nonce || ciphertext)`.
    pub fn encrypt(&self, context: &str, plaintext: &str) -> Result<String> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(hex::encode(out))
    }

    pub fn decrypt(&self, context: &str, stored: &str) -> Result<String> {
        let bytes = hex::decode(stored).map_err(|_| Error::Internal("stored secret is not hex".into()))?;
        if bytes.len() < 12 {
            return Err(Error::Internal("stored secret is truncated".into()));
        }
        let (nonce, ct) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let pt = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| Error::Internal("a stored secret cannot be decrypted: was the server's secret key changed?".into()))?;
        String::from_utf8(pt).map_err(|_| Error::Internal("stored secret is not UTF-8".into()))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let k = SecretKey::generate();
        let ct = k.encrypt("ldap/bind_password", "s3cret").unwrap();
        assert!(!ct.contains("s3cret"));
        assert_eq!(k.decrypt("ldap/bind_password", &ct).unwrap(), "s3cret");
        assert!(k.decrypt("ldap_ha/bind_password", &ct).is_err(), "bound to its context");
        assert!(SecretKey::generate().decrypt("ldap/bind_password", &ct).is_err(), "another key fails");
        assert_ne!(ct, k.encrypt("ldap/bind_password", "s3cret").unwrap(), "fresh nonce each time");
        assert_eq!(SecretKey::from_hex(&k.to_hex()).unwrap().0, k.0);
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
    }
}
