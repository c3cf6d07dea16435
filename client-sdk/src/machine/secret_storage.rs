//! Secret storage in account data (`m.secret_storage.v1.aes-hmac-sha2`):
//! the account data contents a client writes and reads, without I/O.
//!
//! [`SecretStorageKey::create`] makes a key (random, or from a passphrase)
//! and its description, the content of `m.secret_storage.key.<id>`, to be
//! named in `m.secret_storage.default_key`. [`SecretStorageKey::open`]
//! rebuilds the key from what the user types and checks it against the
//! description, so a wrong key is told apart from a damaged secret before
//! anything is decrypted. A secret is stored as the account data event
//! named after it (`m.cross_signing.master`, `m.megolm_backup.v1`, …) with
//! content `{"encrypted": {"<key id>": {iv, ciphertext, mac}}}`.
//!
//! The cryptography is `myelin_crypto::secret_storage`.

use myelin_crypto::{
    recovery_key::RecoveryKeyError,
    secret_storage::{
        self as crypto, EncryptedSecret, PASSPHRASE_ALGORITHM, PassphraseParams,
        SECRET_STORAGE_ALGORITHM,
    },
};
use rand::{Rng, distributions::Alphanumeric};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// The account data event naming the default key.
pub const DEFAULT_KEY_EVENT: &str = "m.secret_storage.default_key";
/// The length of a new key id.
const KEY_ID_LENGTH: usize = 32;

/// The account data event type of key `key_id`'s description.
pub fn key_event_type(key_id: &str) -> String {
    format!("m.secret_storage.key.{key_id}")
}

/// Why a secret storage key could not be made or opened, or a secret read.
///
/// No variant carries key material or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStorageError {
    /// The account has no default secret storage key: secret storage was
    /// never set up.
    #[error("secret storage is not set up")]
    NotSetUp,
    /// The recovery key was mistyped or is not a recovery key.
    #[error(transparent)]
    RecoveryKey(RecoveryKeyError),
    /// The recovery key or passphrase is not the key's: the description's
    /// check (or a secret's MAC) does not match.
    #[error("wrong recovery key or passphrase")]
    WrongKey,
    /// The key was not made from a passphrase: only its recovery key opens it.
    #[error("this secret storage key has no passphrase")]
    NoPassphrase,
    /// The description names another algorithm, or unusable passphrase
    /// parameters.
    #[error("unsupported secret storage key")]
    Unsupported,
    /// The description or the secret's entry is missing a field or does
    /// not decode.
    #[error("malformed secret storage data")]
    Malformed,
    /// The secret is not encrypted under this key.
    #[error("the secret is not stored under this key")]
    NotStored,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
}

impl From<crypto::SecretStorageError> for SecretStorageError {
    fn from(error: crypto::SecretStorageError) -> Self {
        match error {
            crypto::SecretStorageError::RecoveryKey(error) => Self::RecoveryKey(error),
            crypto::SecretStorageError::WrongKey => Self::WrongKey,
            crypto::SecretStorageError::Passphrase => Self::Unsupported,
            crypto::SecretStorageError::Randomness => Self::Randomness,
            _ => Self::Malformed,
        }
    }
}

/// What the user typed to unlock secret storage.
#[derive(Clone, Copy)]
pub enum Unlock<'a> {
    /// The recovery key, spaces or not.
    RecoveryKey(&'a str),
    /// The passphrase the key was made from.
    Passphrase(&'a str),
}

/// A secret storage key with its id. `Debug` is redacted.
#[derive(Debug)]
pub struct SecretStorageKey {
    key_id: String,
    key: crypto::SecretStorageKey,
}

/// A new key: write `description` to [`key_event_type`] and
/// `{"key": key_id}` to [`DEFAULT_KEY_EVENT`], and show `recovery_key` to
/// the user once.
#[derive(Debug)]
pub struct NewSecretStorageKey {
    /// The key, to encrypt secrets with.
    pub key: SecretStorageKey,
    /// The content of the `m.secret_storage.key.<id>` event.
    pub description: Value,
    /// The key as a recovery key.
    pub recovery_key: Zeroizing<String>,
}

impl SecretStorageKey {
    /// Makes a new key: random, or derived from `passphrase` with a fresh
    /// salt (the recovery key opens it either way).
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn create(passphrase: Option<&str>) -> Result<NewSecretStorageKey, SecretStorageError> {
        let (key, params) = match passphrase {
            None => (crypto::SecretStorageKey::generate()?, None),
            Some(passphrase) => {
                let params = PassphraseParams::generate()?;
                let key = crypto::SecretStorageKey::from_passphrase(passphrase, &params)?;
                (key, Some(params))
            }
        };
        let (iv, mac) = key.key_check()?;
        let mut description = json!({
            "algorithm": SECRET_STORAGE_ALGORITHM,
            "iv": iv,
            "mac": mac,
        });
        if let Some(params) = params {
            description["passphrase"] = json!({
                "algorithm": PASSPHRASE_ALGORITHM,
                "salt": params.salt,
                "iterations": params.iterations,
            });
        }
        let key_id = rand::thread_rng()
            .sample_iter(Alphanumeric)
            .take(KEY_ID_LENGTH)
            .map(char::from)
            .collect();
        let recovery_key = key.to_recovery_key();
        Ok(NewSecretStorageKey {
            key: Self { key_id, key },
            description,
            recovery_key,
        })
    }

    /// Rebuilds key `key_id` from what the user typed and checks it against
    /// its `description` (the content of `m.secret_storage.key.<key_id>`).
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::RecoveryKey`] for a mistyped recovery key,
    /// [`SecretStorageError::WrongKey`] for another key or passphrase,
    /// [`SecretStorageError::NoPassphrase`], [`SecretStorageError::Unsupported`]
    /// or [`SecretStorageError::Malformed`] for a description this cannot use.
    pub fn open(
        key_id: &str,
        description: &Value,
        unlock: Unlock<'_>,
    ) -> Result<Self, SecretStorageError> {
        if description.get("algorithm").and_then(Value::as_str) != Some(SECRET_STORAGE_ALGORITHM) {
            return Err(SecretStorageError::Unsupported);
        }
        let key = match unlock {
            Unlock::RecoveryKey(recovery_key) => {
                crypto::SecretStorageKey::from_recovery_key(recovery_key)?
            }
            Unlock::Passphrase(passphrase) => {
                let params = passphrase_params(description)?;
                crypto::SecretStorageKey::from_passphrase(passphrase, &params)?
            }
        };
        let field = |name| description.get(name).and_then(Value::as_str);
        // The check is optional in the spec; a description without one can
        // only be tested by decrypting a secret, which reports a wrong key
        // the same way.
        if let (Some(iv), Some(mac)) = (field("iv"), field("mac")) {
            key.check(iv, mac)?;
        }
        Ok(Self {
            key_id: key_id.to_owned(),
            key,
        })
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The content of the account data event `name` holding `secret`.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::Randomness`].
    pub fn encrypt_secret(&self, name: &str, secret: &str) -> Result<Value, SecretStorageError> {
        let entry = self.key.encrypt(name, secret.as_bytes())?;
        Ok(json!({
            "encrypted": {
                &self.key_id: {
                    "iv": entry.iv,
                    "ciphertext": entry.ciphertext,
                    "mac": entry.mac,
                }
            }
        }))
    }

    /// Reads the secret from the content of the account data event `name`.
    ///
    /// # Errors
    ///
    /// [`SecretStorageError::NotStored`] if it is not encrypted under this
    /// key, [`SecretStorageError::Malformed`] if the entry does not decode
    /// or the secret is not UTF-8, [`SecretStorageError::WrongKey`] if the
    /// MAC does not match (an altered entry).
    pub fn decrypt_secret(
        &self,
        name: &str,
        content: &Value,
    ) -> Result<Zeroizing<String>, SecretStorageError> {
        let entry = content
            .get("encrypted")
            .and_then(|encrypted| encrypted.get(&self.key_id))
            .ok_or(SecretStorageError::NotStored)?;
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(SecretStorageError::Malformed)
        };
        let entry = EncryptedSecret {
            iv: field("iv")?,
            ciphertext: field("ciphertext")?,
            mac: field("mac")?,
        };
        let plaintext = self.key.decrypt(name, &entry)?;
        let secret = std::str::from_utf8(&plaintext).map_err(|_| SecretStorageError::Malformed)?;
        Ok(Zeroizing::new(secret.to_owned()))
    }
}

fn passphrase_params(description: &Value) -> Result<PassphraseParams, SecretStorageError> {
    let passphrase: &Map<String, Value> = description
        .get("passphrase")
        .and_then(Value::as_object)
        .ok_or(SecretStorageError::NoPassphrase)?;
    if passphrase.get("algorithm").and_then(Value::as_str) != Some(PASSPHRASE_ALGORITHM)
        || passphrase
            .get("bits")
            .is_some_and(|bits| bits.as_u64() != Some(256))
    {
        return Err(SecretStorageError::Unsupported);
    }
    let salt = passphrase
        .get("salt")
        .and_then(Value::as_str)
        .ok_or(SecretStorageError::Malformed)?;
    let iterations = passphrase
        .get("iterations")
        .and_then(Value::as_u64)
        .ok_or(SecretStorageError::Malformed)?;
    Ok(PassphraseParams {
        salt: salt.to_owned(),
        iterations: u32::try_from(iterations).map_err(|_| SecretStorageError::Unsupported)?,
    })
}

#[cfg(test)]
mod tests;
