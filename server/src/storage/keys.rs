//! The server's own ed25519 signing keys.
//!
//! At most one key is current (it has no expiry) and signs everything the
//! server sends; expired keys keep their public half so that remote servers
//! can still verify what they signed ([spec]). An expired key's seed is
//! erased: nothing needs it any more, and a copy of the database taken later
//! must not let anyone sign as this server with a key others still accept for
//! older events.
//!
//! [spec]: https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys

use std::fmt;

use async_trait::async_trait;
use myelin_crypto::SigningKey;
use ruma::{OwnedServerSigningKeyId, ServerSigningKeyId, serde::Base64};

use super::{Millis, StorageError};

/// One of the server's signing keys as stored.
///
/// Its `Debug` shows ids, the public key and timestamps, never the seed.
pub struct StoredSigningKey {
    /// `ed25519:<version>`.
    pub key_id: OwnedServerSigningKeyId,
    /// The public (verify) key.
    pub public_key: Base64,
    /// When the key was created.
    pub created: Millis,
    /// When the key stopped signing; `None` for the current key.
    pub expired: Option<Millis>,
    /// The key pair: `Some` exactly for the current key, whose seed is kept.
    pub signing_key: Option<SigningKey>,
}

impl fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("key_id", &self.key_id.as_str())
            .field("public_key", &self.public_key.encode())
            .field("created", &self.created)
            .field("expired", &self.expired)
            .field("has_seed", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

/// What the server-keys service persists.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every signing key the server has had, current and expired, oldest first.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] when a stored seed does not load or does not
    /// match its stored public key.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StorageError>;

    /// Stores `key` as the current signing key.
    ///
    /// # Errors
    /// [`StorageError::Conflict`] when its key id is taken, or when another
    /// key is already current (two servers sharing a database started at
    /// once: the loser reloads and uses the winner's key).
    async fn insert_signing_key(
        &self,
        key: &SigningKey,
        created: Millis,
    ) -> Result<(), StorageError>;

    /// Retires the current key `key_id` as of `expired`, erasing its seed and
    /// keeping its public key.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when `key_id` is not the current key.
    async fn expire_signing_key(
        &self,
        key_id: &ServerSigningKeyId,
        expired: Millis,
    ) -> Result<(), StorageError>;
}
