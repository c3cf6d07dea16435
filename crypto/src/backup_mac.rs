//! Authenticated key backup (MSC4048, unstable names): a MAC over every
//! backed-up entry with a key derived from the backup's *private* key, so
//! that only the user's devices holding that key can write an entry that
//! reads as authentic. The spec's backup algorithm lets anyone holding the
//! public key, the server included, add entries; this closes that door.
//!
//! `backup_mac_key = HKDF-SHA-256(salt = "", ikm = decryption key,
//! info = "MATRIX_BACKUP_MAC_KEY", 32 bytes)`; the MAC is HMAC-SHA-256 over
//! the entry's `session_data` as canonical JSON without `signatures` and
//! `unsigned`, stored as `signatures.<user id>.<`[`MAC_KEY_ID`]`>` in
//! unpadded base64.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{backup::BackupDecryptionKey, base64, canonicalize};

/// The backup algorithm whose entries must carry the MAC.
pub const AUTHENTICATED_BACKUP_ALGORITHM: &str = "org.matrix.msc4048.curve25519-aes-sha2";
/// The MAC's name in `signatures.<user id>`.
pub const MAC_KEY_ID: &str = "org.matrix.msc4048.hmac-sha-256:backup_mac_key";
/// The field of a backed-up room key saying where an unauthenticated key
/// came from (absent when the writer vouches for its sender).
pub const UNAUTHENTICATED_FIELD: &str = "org.matrix.msc4048.unauthenticated";

/// The secret storage name of the MAC key (MSC4048).
pub const MAC_SECRET: &str = "m.megolm_backup.v1.mac";

const INFO: &[u8] = b"MATRIX_BACKUP_MAC_KEY";

type HmacSha256 = Hmac<Sha256>;

/// The backup MAC key. Zeroized on drop; `Debug` is redacted.
pub struct BackupMacKey(Zeroizing<[u8; 32]>);

impl BackupMacKey {
    /// The MAC key of the backup whose private key is `key`.
    pub fn derive(key: &BackupDecryptionKey) -> Self {
        let mut mac_key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(&[]), key.to_bytes().as_slice())
            .expand(INFO, mac_key.as_mut_slice())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA-256 output length"));
        Self(mac_key)
    }

    /// The key in unpadded base64, as secret storage keeps it under
    /// [`MAC_SECRET`].
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::encode(self.0.as_slice()))
    }

    /// Adds the MAC of `session_data` as `user_id`'s signature.
    pub fn sign(&self, user_id: &str, session_data: &mut Map<String, Value>) {
        let mac = base64::encode(&self.mac(session_data).finalize().into_bytes());
        let signatures = session_data
            .entry("signatures")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(signatures) = signatures {
            let by_user = signatures
                .entry(user_id.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(by_user) = by_user {
                by_user.insert(MAC_KEY_ID.to_owned(), Value::String(mac));
            }
        }
    }

    /// Whether `session_data` carries `user_id`'s valid MAC (checked in
    /// constant time).
    pub fn verify(&self, user_id: &str, session_data: &Map<String, Value>) -> bool {
        let Some(mac) = session_data
            .get("signatures")
            .and_then(|s| s.get(user_id))
            .and_then(|s| s.get(MAC_KEY_ID))
            .and_then(Value::as_str)
            .and_then(|mac| base64::decode(mac).ok())
        else {
            return false;
        };
        self.mac(session_data).verify_slice(&mac).is_ok()
    }

    /// The HMAC fed with the canonical JSON of `session_data` without
    /// `signatures` and `unsigned`.
    fn mac(&self, session_data: &Map<String, Value>) -> HmacSha256 {
        let mut signed = session_data.clone();
        signed.remove("signatures");
        signed.remove("unsigned");
        // A map of JSON values always serialises, and canonicalises unless
        // it holds floats, which no entry this code writes or reads does;
        // an entry that did would get a MAC no one could match.
        let canonical = serde_json::to_string(&signed)
            .ok()
            .and_then(|json| canonicalize(&json).ok())
            .unwrap_or_default();
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(canonical.as_bytes());
        mac
    }
}

impl std::fmt::Debug for BackupMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupMacKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry() -> Map<String, Value> {
        json!({"ephemeral": "e", "ciphertext": "c", "mac": "m"})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_signed_entry_verifies_and_any_change_breaks_it() {
        let key = BackupMacKey::derive(&BackupDecryptionKey::new());
        let mut signed = entry();
        key.sign("@alice:example.org", &mut signed);
        assert!(key.verify("@alice:example.org", &signed));
        // Another user's name, another field, or another backup's key.
        assert!(!key.verify("@mallory:example.org", &signed));
        let mut changed = signed.clone();
        changed.insert("ciphertext".to_owned(), json!("other"));
        assert!(!key.verify("@alice:example.org", &changed));
        let other = BackupMacKey::derive(&BackupDecryptionKey::new());
        assert!(!other.verify("@alice:example.org", &signed));
        // `unsigned` is not covered; a missing MAC never verifies.
        signed.insert("unsigned".to_owned(), json!({"age": 1}));
        assert!(key.verify("@alice:example.org", &signed));
        assert!(!key.verify("@alice:example.org", &entry()));
    }

    #[test]
    fn the_mac_key_is_hkdf_of_the_private_key() {
        let private = BackupDecryptionKey::from_bytes(&[7; 32]);
        let mut expected = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&[]), &[7; 32])
            .expand(b"MATRIX_BACKUP_MAC_KEY", &mut expected)
            .unwrap();
        assert_eq!(*BackupMacKey::derive(&private).0, expected);
        assert_eq!(
            *BackupMacKey::derive(&private).to_base64(),
            base64::encode(&expected)
        );
    }
}
