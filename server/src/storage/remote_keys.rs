//! Other servers' signing keys, as fetched and verified by the federation
//! key service (`service::federation::keys`).

use async_trait::async_trait;
use ruma::{OwnedServerName, ServerName, serde::Base64};

use super::{Millis, StorageError};

/// One verify key of a remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKey {
    /// `ed25519:<version>`, as the server published it.
    pub key_id: String,
    /// The public key.
    pub public_key: Base64,
    /// Until when it verifies signatures: the document's `valid_until_ts`
    /// (capped) for a current key, its `expired_ts` for an old one.
    pub valid_until: Millis,
    /// Whether it was published under `old_verify_keys`.
    pub is_expired: bool,
}

/// A server's key document as it signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeyDocument {
    /// The server it describes.
    pub server_name: OwnedServerName,
    /// The signed JSON text.
    pub json: String,
    /// Its `valid_until_ts`.
    pub valid_until: Millis,
    /// When this server fetched it.
    pub fetched: Millis,
}

/// What the federation key service persists.
#[async_trait]
pub trait RemoteKeyStore: Send + Sync {
    /// Every key known for `server`, current and old.
    async fn remote_keys(&self, server: &ServerName) -> Result<Vec<RemoteKey>, StorageError>;

    /// Stores a freshly verified document and its keys in one transaction:
    /// the document replaces the previous one, each key replaces the stored
    /// key with its id, and keys it does not mention stay as they were.
    async fn store_remote_keys(
        &self,
        document: &RemoteKeyDocument,
        keys: &[RemoteKey],
    ) -> Result<(), StorageError>;

    /// The latest document stored for `server`.
    async fn remote_key_document(
        &self,
        server: &ServerName,
    ) -> Result<Option<RemoteKeyDocument>, StorageError>;
}
