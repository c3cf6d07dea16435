//! Cross-signing keys: a user's master, self-signing and user-signing
//! ed25519 keys ([spec]).
//!
//! A [`CrossSigningKey`] is one such private key. It signs JSON as its user
//! under the key id `ed25519:<unpadded base64 public key>`, the form every
//! cross-signing signature takes, and pickles to a string sealed under the
//! machine's [`PickleKey`] (AES-256-GCM with a key derived from the pickle
//! key, bound to the key's role), since vodozemac has no pickle for a bare
//! ed25519 key. Signatures are checked with
//! [`crate::verify_json_signature`].
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#cross-signing

use std::fmt;

use serde_json::{Map, Value};
use vodozemac::{Ed25519PublicKey, Ed25519SecretKey};
use zeroize::Zeroizing;

use crate::{
    PickleError, PickleKey,
    at_rest::AtRestKey,
    base64,
    device_signing::{DeviceSignatureError, sign_json_with},
};

/// One private cross-signing key.
///
/// `Debug` shows the public key only; there is no `Display`. The secret
/// lives in vodozemac's key type, which zeroizes it on drop.
pub struct CrossSigningKey(Ed25519SecretKey);

impl CrossSigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(Ed25519SecretKey::new())
    }

    /// The 32-byte seed as unpadded base64: the secret that secret storage
    /// keeps under `m.cross_signing.<role>`.
    pub fn to_base64_seed(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(*self.0.to_bytes());
        Zeroizing::new(base64::encode(seed.as_ref()))
    }

    /// The key whose seed [`CrossSigningKey::to_base64_seed`] gave, or
    /// `None` if `seed` is not 32 bytes of base64.
    pub fn from_base64_seed(seed: &str) -> Option<Self> {
        let bytes = Zeroizing::new(base64::decode(seed).ok()?);
        let seed: &[u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(Self(Ed25519SecretKey::from_slice(seed)))
    }

    /// The public key.
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.0.public_key()
    }

    /// The key id that names it in `keys` and `signatures`:
    /// `ed25519:<unpadded base64 public key>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.public_key().to_base64())
    }

    /// Signs `object` as `user_id` with this key (the spec's [Signing
    /// JSON]), adding `signatures.<user_id>.ed25519:<public key>` and keeping
    /// other signatures.
    ///
    /// # Errors
    ///
    /// [`DeviceSignatureError::Malformed`] for an object canonical JSON
    /// cannot carry (a float) or a non-object `signatures`.
    ///
    /// [Signing JSON]: https://spec.matrix.org/v1.16/appendices/#signing-json
    pub fn sign_json(
        &self,
        user_id: &str,
        object: &mut Map<String, Value>,
    ) -> Result<(), DeviceSignatureError> {
        sign_json_with(|bytes| self.0.sign(bytes), user_id, &self.key_id(), object)
    }

    /// The key sealed under `key`, bound to `role` (`"master"`,
    /// `"self_signing"`, `"user_signing"`): a sealed key moved to another
    /// role does not load.
    ///
    /// # Errors
    ///
    /// [`PickleError`] if the system's random number generator failed.
    pub fn pickle(&self, key: &PickleKey, role: &str) -> Result<String, PickleError> {
        let seed = Zeroizing::new(*self.0.to_bytes());
        let sealed = AtRestKey::for_pickles(key)
            .and_then(|k| k.seal(&context(role), seed.as_ref()))
            .map_err(|_| PickleError)?;
        Ok(base64::encode(&sealed))
    }

    /// Loads a key from [`CrossSigningKey::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for another pickle key or role, or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey, role: &str) -> Result<Self, PickleError> {
        let sealed = base64::decode(pickle).map_err(|_| PickleError)?;
        let seed = AtRestKey::for_pickles(key)
            .and_then(|k| k.open(&context(role), &sealed))
            .map_err(|_| PickleError)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| PickleError)?;
        Ok(Self(Ed25519SecretKey::from_slice(seed)))
    }
}

impl fmt::Debug for CrossSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrossSigningKey")
            .field("public_key", &self.public_key().to_base64())
            .finish_non_exhaustive()
    }
}

fn context(role: &str) -> Vec<u8> {
    format!("myelin.cross_signing.v1.{role}").into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::CrossSigningKey;
    use crate::{PickleKey, verify_json_signature};

    #[test]
    fn signs_under_its_public_key_id() {
        let master = CrossSigningKey::generate();
        let mut object = json!({"user_id": "@a:x", "usage": ["self_signing"]})
            .as_object()
            .unwrap()
            .clone();
        master.sign_json("@a:x", &mut object).unwrap();
        let key_id = format!("ed25519:{}", master.public_key().to_base64());
        assert_eq!(master.key_id(), key_id);
        verify_json_signature(&master.public_key(), "@a:x", &key_id, &object).unwrap();
        let other = CrossSigningKey::generate();
        assert!(verify_json_signature(&other.public_key(), "@a:x", &key_id, &object).is_err());
    }

    #[test]
    fn seeds_round_trip() {
        let master = CrossSigningKey::generate();
        let seed = master.to_base64_seed();
        assert_eq!(seed.len(), 43); // unpadded base64 of 32 bytes
        let loaded = CrossSigningKey::from_base64_seed(&seed).unwrap();
        assert_eq!(loaded.public_key(), master.public_key());
        assert!(CrossSigningKey::from_base64_seed("AAAA").is_none());
        assert!(CrossSigningKey::from_base64_seed("not base64!").is_none());
    }

    #[test]
    fn pickles_round_trip_only_under_the_same_key_and_role() {
        let key = PickleKey::from_bytes([3; 32]);
        let master = CrossSigningKey::generate();
        let pickle = master.pickle(&key, "master").unwrap();
        let loaded = CrossSigningKey::from_pickle(&pickle, &key, "master").unwrap();
        assert_eq!(loaded.public_key(), master.public_key());
        assert!(CrossSigningKey::from_pickle(&pickle, &key, "self_signing").is_err());
        let other = PickleKey::from_bytes([4; 32]);
        assert!(CrossSigningKey::from_pickle(&pickle, &other, "master").is_err());
        assert!(CrossSigningKey::from_pickle("not base64!", &key, "master").is_err());
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = CrossSigningKey::generate();
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!(
                "CrossSigningKey {{ public_key: {:?}, .. }}",
                key.public_key().to_base64()
            )
        );
    }
}
