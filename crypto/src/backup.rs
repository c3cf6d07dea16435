//! Server-side key backup: `m.megolm_backup.v1.curve25519-aes-sha2`.
//!
//! A backup is encrypted to a curve25519 public key ([`BackupEncryptionKey`],
//! published in the backup version's `auth_data`); only the holder of the
//! private key ([`BackupDecryptionKey`], shown to the user once as a
//! [recovery key]) can read it. Each room key is encrypted on its own with
//! vodozemac's `pk_encryption` (curve25519 ECDH with a fresh ephemeral key,
//! HKDF-SHA-256, AES-256-CBC, HMAC-SHA-256 truncated to 8 bytes), giving the
//! `{ephemeral, ciphertext, mac}` of the spec's [backup algorithm].
//!
//! The algorithm is unauthenticated by design: anyone who knows the public
//! key can write an entry, and the spec's MAC is computed over an empty
//! message (a historical libolm quirk that every implementation keeps), so
//! it authenticates nothing. Callers must treat what they decrypt as
//! unauthenticated, exactly like a forwarded room key, unless the entry
//! carries a valid MAC of the authenticated backup
//! ([`crate::backup_mac`]).
//!
//! [recovery key]: https://spec.matrix.org/v1.16/client-server-api/#recovery-key
//! [backup algorithm]: https://spec.matrix.org/v1.16/client-server-api/#backup-algorithm-mmegolm_backupv1curve25519-aes-sha2

use std::fmt;

use serde_json::{Map, Value};
use vodozemac::{
    Curve25519PublicKey, Curve25519SecretKey,
    pk_encryption::{Message, PkDecryption, PkEncryption},
};
use zeroize::Zeroizing;

use crate::{
    AtRestKey, PickleError, PickleKey, base64,
    recovery_key::{self, RecoveryKeyError},
};

/// The algorithm name in a backup version's `algorithm` field.
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// Binds a sealed backup key to its purpose (AES-GCM associated data).
const PICKLE_CONTEXT: &[u8] = b"myelin.backup.v1.decryption_key";

/// Errors from reading a recovery key, a public key or a backed-up entry.
///
/// Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The recovery key is not base58.
    #[error("recovery key is not valid base58")]
    RecoveryKeyEncoding,
    /// The recovery key decodes to the wrong number of bytes.
    #[error("recovery key has {0} bytes, expected 35")]
    RecoveryKeyLength(usize),
    /// The recovery key does not start with `0x8B 0x01`.
    #[error("recovery key has the wrong prefix")]
    RecoveryKeyPrefix,
    /// The recovery key's parity byte does not match: a typo.
    #[error("recovery key parity check failed")]
    RecoveryKeyParity,
    /// A public key (in `auth_data` or an entry's `ephemeral`) is not a
    /// base64 curve25519 key.
    #[error("invalid curve25519 public key")]
    InvalidPublicKey,
    /// An entry's `ciphertext` or `mac` is not base64.
    #[error("backup entry is not base64")]
    MalformedEntry,
    /// The entry does not decrypt with this key: wrong key, altered MAC or
    /// ciphertext, or a low-order ephemeral key.
    #[error("backup entry failed to decrypt")]
    Decryption,
}

impl From<RecoveryKeyError> for BackupError {
    fn from(error: RecoveryKeyError) -> Self {
        match error {
            RecoveryKeyError::Encoding => Self::RecoveryKeyEncoding,
            RecoveryKeyError::Length(length) => Self::RecoveryKeyLength(length),
            RecoveryKeyError::Prefix => Self::RecoveryKeyPrefix,
            RecoveryKeyError::Parity => Self::RecoveryKeyParity,
        }
    }
}

/// The private half of a backup key. Zeroized on drop; `Debug` is redacted.
pub struct BackupDecryptionKey(PkDecryption);

impl BackupDecryptionKey {
    /// Generates a fresh random key.
    pub fn new() -> Self {
        Self(PkDecryption::new())
    }

    /// Rebuilds a key from its 32 private bytes, as returned by
    /// [`BackupDecryptionKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(PkDecryption::from_key(Curve25519SecretKey::from_slice(
            bytes,
        )))
    }

    /// The 32 private bytes, for sealed storage.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0.secret_key().to_bytes())
    }

    /// The private key as unpadded base64: the secret that secret storage
    /// keeps under `m.megolm_backup.v1`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::encode(self.to_bytes().as_slice()))
    }

    /// The key [`BackupDecryptionKey::to_base64`] gave, or `None` if `key`
    /// is not 32 bytes of base64.
    pub fn from_base64(key: &str) -> Option<Self> {
        let bytes = Zeroizing::new(base64::decode(key).ok()?);
        let bytes: &[u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// The key sealed under `key` (AES-256-GCM, as the cross-signing keys
    /// are), for the machine's store.
    ///
    /// # Errors
    ///
    /// [`PickleError`] if the system's random number generator failed.
    pub fn pickle(&self, key: &PickleKey) -> Result<String, PickleError> {
        let sealed = AtRestKey::for_pickles(key)
            .and_then(|k| k.seal(PICKLE_CONTEXT, self.to_bytes().as_slice()))
            .map_err(|_| PickleError)?;
        Ok(base64::encode(&sealed))
    }

    /// Loads a key from [`BackupDecryptionKey::pickle`]'s output.
    ///
    /// # Errors
    ///
    /// [`PickleError`] for another pickle key or a damaged pickle.
    pub fn from_pickle(pickle: &str, key: &PickleKey) -> Result<Self, PickleError> {
        let sealed = base64::decode(pickle).map_err(|_| PickleError)?;
        let bytes = AtRestKey::for_pickles(key)
            .and_then(|k| k.open(PICKLE_CONTEXT, &sealed))
            .map_err(|_| PickleError)?;
        let bytes: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| PickleError)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The public key that uploads are encrypted to.
    pub fn encryption_key(&self) -> BackupEncryptionKey {
        BackupEncryptionKey(self.0.public_key())
    }

    /// The spec's recovery key: base58 of `0x8B 0x01`, the private key and
    /// a parity byte (the XOR of all the previous bytes), shown in groups of
    /// four characters separated by spaces.
    pub fn to_recovery_key(&self) -> Zeroizing<String> {
        recovery_key::encode(&self.to_bytes())
    }

    /// Parses a recovery key as the user typed it: whitespace anywhere is
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`BackupError::RecoveryKeyEncoding`], [`BackupError::RecoveryKeyLength`],
    /// [`BackupError::RecoveryKeyPrefix`] or [`BackupError::RecoveryKeyParity`].
    pub fn from_recovery_key(recovery_key: &str) -> Result<Self, BackupError> {
        let key = recovery_key::decode(recovery_key)?;
        Ok(Self::from_bytes(&key))
    }

    /// Decrypts one backed-up entry. The result is unauthenticated (see the
    /// module docs).
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidPublicKey`] or [`BackupError::MalformedEntry`]
    /// if a field does not decode, [`BackupError::Decryption`] if the entry
    /// was not encrypted to this key or was altered.
    pub fn decrypt(&self, entry: &EncryptedEntry) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let message = Message {
            ciphertext: base64::decode(&entry.ciphertext)
                .map_err(|_| BackupError::MalformedEntry)?,
            mac: base64::decode(&entry.mac).map_err(|_| BackupError::MalformedEntry)?,
            ephemeral_key: Curve25519PublicKey::from_base64(&entry.ephemeral)
                .map_err(|_| BackupError::InvalidPublicKey)?,
        };
        self.0
            .decrypt(&message)
            .map(Zeroizing::new)
            .map_err(|_| BackupError::Decryption)
    }
}

impl Default for BackupDecryptionKey {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for BackupDecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupDecryptionKey([redacted])")
    }
}

/// The public half of a backup key, as published in `auth_data.public_key`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BackupEncryptionKey(Curve25519PublicKey);

impl BackupEncryptionKey {
    /// Parses an unpadded base64 curve25519 public key.
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidPublicKey`].
    pub fn from_base64(key: &str) -> Result<Self, BackupError> {
        Curve25519PublicKey::from_base64(key)
            .map(Self)
            .map_err(|_| BackupError::InvalidPublicKey)
    }

    /// The key as unpadded base64.
    pub fn to_base64(&self) -> String {
        self.0.to_base64()
    }

    /// The unsigned `auth_data` of a backup version using this key:
    /// `{"public_key": "<base64>"}`. The caller signs it with its device key.
    pub fn auth_data(&self) -> Map<String, Value> {
        let mut auth_data = Map::new();
        auth_data.insert("public_key".to_owned(), Value::String(self.to_base64()));
        auth_data
    }

    /// Reads the public key out of a backup version's `auth_data`.
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidPublicKey`] if `public_key` is missing or is not
    /// a curve25519 key.
    pub fn from_auth_data(auth_data: &Map<String, Value>) -> Result<Self, BackupError> {
        let key = auth_data
            .get("public_key")
            .and_then(Value::as_str)
            .ok_or(BackupError::InvalidPublicKey)?;
        Self::from_base64(key)
    }

    /// Encrypts one entry's `session_data` plaintext (the JSON of a room
    /// key) to this key, with a fresh ephemeral key.
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidPublicKey`] if this key is a low-order point
    /// (a malicious `auth_data`), which would give a predictable secret.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<EncryptedEntry, BackupError> {
        let message = PkEncryption::from_key(self.0)
            .encrypt(plaintext)
            .map_err(|_| BackupError::InvalidPublicKey)?;
        Ok(EncryptedEntry {
            ephemeral: message.ephemeral_key.to_base64(),
            ciphertext: base64::encode(&message.ciphertext),
            mac: base64::encode(&message.mac),
        })
    }
}

impl fmt::Debug for BackupEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackupEncryptionKey")
            .field(&self.to_base64())
            .finish()
    }
}

/// One backed-up room key's `session_data`: three unpadded base64 strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedEntry {
    /// The sender's ephemeral curve25519 public key.
    pub ephemeral: String,
    /// AES-256-CBC ciphertext of the room key JSON.
    pub ciphertext: String,
    /// The spec's truncated HMAC (which authenticates nothing).
    pub mac: String,
}

impl EncryptedEntry {
    /// The entry as the `session_data` JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut object = Map::new();
        for (name, value) in [
            ("ephemeral", &self.ephemeral),
            ("ciphertext", &self.ciphertext),
            ("mac", &self.mac),
        ] {
            object.insert(name.to_owned(), Value::String(value.clone()));
        }
        object
    }

    /// Reads a `session_data` JSON object.
    ///
    /// # Errors
    ///
    /// [`BackupError::MalformedEntry`] if a field is missing or not a string.
    pub fn from_json(object: &Value) -> Result<Self, BackupError> {
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(BackupError::MalformedEntry)
        };
        Ok(Self {
            ephemeral: field("ephemeral")?,
            ciphertext: field("ciphertext")?,
            mac: field("mac")?,
        })
    }
}

#[cfg(test)]
mod tests;
